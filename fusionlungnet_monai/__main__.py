"""`python -m fusionlungnet_monai` behaves like the `fusionlungnet` console script."""

from fusionlungnet_monai.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
