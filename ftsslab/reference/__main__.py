"""``python -m ftsslab.reference [DIR]``: regenerate the reference captures."""

import sys
from pathlib import Path

from . import write_all

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "pcaps/reference")
    for family, count in write_all(out).items():
        print(f"{out / (family + '.pcapng')}: {count} packets")
