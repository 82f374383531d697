#!/usr/bin/env python3
"""Checks Cargo.toml against the tree: the declared rust-version is at least
what every locked dependency declares, every direct dependency is used, and
the license has its file. Exit 1 with the reasons otherwise."""
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

root = Path(__file__).resolve().parent.parent
manifest = tomllib.loads((root / "Cargo.toml").read_text())
problems = []


def version(text):
    return tuple(int(x) for x in text.split("."))


declared = manifest["package"]["rust-version"]
meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
)
needed = max(
    ((version(p["rust_version"]) + (0,) * 3)[:3], p["name"], p["version"])
    for p in meta["packages"]
    if p.get("rust_version") and p["name"] != manifest["package"]["name"]
)
if (version(declared) + (0,) * 3)[:3] < needed[0]:
    problems.append(
        f"rust-version {declared} is older than {'.'.join(map(str, needed[0]))}, "
        f"which {needed[1]} {needed[2]} needs"
    )
else:
    print(f"rust-version {declared}: highest locked requirement is "
          f"{'.'.join(map(str, needed[0]))} ({needed[1]} {needed[2]})")

# Every direct dependency is named somewhere in the code that can use it.
sources = {
    "dependencies": ["src", "tests", "benches", "examples"],
    "dev-dependencies": ["tests", "benches", "examples", "src"],
}
tables = [("dependencies", manifest.get("dependencies", {}))]
tables.append(("dev-dependencies", manifest.get("dev-dependencies", {})))
for target in manifest.get("target", {}).values():
    tables.append(("dependencies", target.get("dependencies", {})))
text_by_kind = {}
for kind, dirs in sources.items():
    text_by_kind[kind] = "\n".join(
        f.read_text(errors="replace")
        for d in dirs
        for f in (root / d).rglob("*.rs")
    )
for kind, deps in tables:
    for name in deps:
        ident = name.replace("-", "_")
        if not re.search(rf"\b{re.escape(ident)}\b", text_by_kind[kind]):
            problems.append(f"{kind} {name} is never used")

lic = manifest["package"].get("license")
license_file = root / "LICENSE"
if lic != "MIT" or not license_file.is_file() or "MIT License" not in license_file.read_text():
    problems.append("license: Cargo.toml says MIT; LICENSE must hold the MIT text")

for p in problems:
    print(f"FAIL: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
