"""reprogrid: reproducible grids of PyTorch training runs, wired by Snakemake."""

__version__ = "0.1.0"
