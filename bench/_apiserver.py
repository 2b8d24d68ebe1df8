"""Run only the API server (no scheduler/controllers) for benchmarks: _apiserver.py DIR PORT."""

import sys
from pathlib import Path

from shoal.apiserver import serve_data_dir

if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve_data_dir(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
