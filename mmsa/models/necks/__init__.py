from .attention_neck import AttnNeck

__all__ = ['AttnNeck']
