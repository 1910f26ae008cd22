"""``torchrun --nproc_per_node N -m tdmi.train ...``: the tdmi-train command, once per process."""

from tdmi.cli.train import main

if __name__ == "__main__":
    main()
