"""Usage: python -m resomap.explore [--host 127.0.0.1] [--port 7860]

Serve the explorer for the study in the current workspace (run it from the repository root after
`dvc repro`). Loopback only unless --host says otherwise; no analytics, nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from resomap.core.errors import ResoMapError


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (default: loopback only)")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no usage reports, no version check

    from resomap.core.config import load_params
    from resomap.core.device import pick_device
    from resomap.explore.app import build_app
    from resomap.explore.looks import Looker
    from resomap.explore.study import load_explored_study
    from resomap.explore.uploads import MAX_UPLOAD_BYTES

    try:
        params = load_params()
        study = load_explored_study(params)
    except ResoMapError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    device = pick_device()
    app = build_app(study, Looker(params, len(study.classes), device))
    app.launch(server_name=args.host, server_port=args.port, share=False, max_file_size=MAX_UPLOAD_BYTES,
               show_error=True, quiet=True, prevent_thread_lock=True)
    print(f"explore: {len(study.cells)} trained cells on {device.type}, ready in {time.perf_counter() - start:.1f} s "
          f"at http://{args.host}:{args.port}", flush=True)
    app.block_thread()


if __name__ == "__main__":
    main()
