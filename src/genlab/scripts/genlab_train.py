"""`genlab train` as a plain script: what Lightning re-runs to start DDP ranks > 0 of a job.

Lightning starts the other ranks by re-executing `sys.argv`; the `genlab` console script cannot be re-run
that way (`sys.argv[0]` is not a file Python can execute with a sub-command), so the entry point points
`sys.argv[0]` here. This folder holds nothing else, so running it puts no genlab module on `sys.path`.
"""

import sys

from genlab.cli import main

if __name__ == "__main__":
    main(["train", *sys.argv[1:]])
