"""Run every benchmark and print its figures: .venv/bin/python bench/run_all.py"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

for script in ("api_bench.py", "startup_bench.py", "memory_bench.py", "image_pull_bench.py"):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script)], check=False, cwd=HERE.parent)
