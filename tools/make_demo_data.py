"""Generate the bundled synthetic demo data (COCO and ADE20K layouts).

    python tools/make_demo_data.py [--root data/demo] [--num-train 400]
"""
import argparse
import time

from mmsa.demo_data import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', default='data/demo')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, nargs=2, default=(192, 192),
                        metavar=('H', 'W'))
    args = parser.parse_args()
    start = time.perf_counter()
    meta = generate(args.root, args.num_train, args.num_val, args.seed,
                    tuple(args.size))
    print(f'demo data in {args.root} ({meta}) '
          f'ready in {time.perf_counter() - start:.1f}s')


if __name__ == '__main__':
    main()
