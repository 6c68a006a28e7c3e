"""Unzipped size of each built Lambda function (its code plus its layers), against Lambda's limits.

Reads a ``sam build`` output directory (``template.yaml`` plus one folder per function and layer),
resolves each function's layers for the chosen architecture, prints a table and writes it as JSON.
Exits 1 when a function exceeds its limit: 250 MB for every zip function (Lambda's hard quota on the
function plus all its layers, unzipped) and 150 MB for ``RecommendFunction`` (our cold-start budget).
Sizes are file bytes (what Lambda counts), in MB of 2**20 bytes as the Lambda quota is.

Example::

    python infra/function_sizes.py .aws-sam/build-x86_64 --architecture x86_64 --json sizes.json

``load_template`` (a YAML loader that accepts CloudFormation's short ``!Ref``-style tags) is also what
``tests/unit/test_template.py`` reads ``template.yaml`` with.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("function_sizes")

MB = 1024 * 1024
LAMBDA_ZIP_LIMIT_MB = 250
LIMITS_MB = {"RecommendFunction": 150}


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Ref X`` into ``{"Ref": "X"}`` and ``!Sub s`` into ``{"Fn::Sub": s}``."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{tag_suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    """A CloudFormation/SAM YAML template as plain dicts, intrinsic functions in their long form.

    >>> load_template(Path("template.yaml"))["Resources"]["EventsQueue"]["Type"]
    'AWS::SQS::Queue'
    """
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)


@dataclass(frozen=True)
class FunctionSize:
    """One function's unzipped size: its own code, each layer, and the total against its limit."""

    function: str
    code_mb: float
    layers_mb: dict[str, float]
    total_mb: float
    limit_mb: int
    ok: bool


def directory_bytes(path: Path) -> int:
    """Bytes of every regular file under ``path`` (symlinks are not followed: zips store their targets)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if file.is_file() and not file.is_symlink():
                total += file.stat().st_size
    return total


def _resolve_condition(name: str, conditions: dict[str, Any], parameters: dict[str, str]) -> bool:
    """Evaluate the ``Fn::Equals`` / ``Fn::Not`` / ``Fn::And`` / ``Fn::Or`` conditions the template uses."""

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return parameters.get(node["Ref"])
        return node

    def evaluate(node: Any) -> bool:
        if isinstance(node, dict) and "Condition" in node:
            return evaluate(conditions[node["Condition"]])
        if isinstance(node, dict) and len(node) == 1:
            ((key, args),) = node.items()
            if key == "Fn::Equals":
                return value(args[0]) == value(args[1])
            if key == "Fn::Not":
                return not evaluate(args[0])
            if key == "Fn::And":
                return all(evaluate(a) for a in args)
            if key == "Fn::Or":
                return any(evaluate(a) for a in args)
        raise ValueError(f"cannot evaluate condition {name}: {node!r}")

    return evaluate(conditions[name])


def _layer_ids(function: dict[str, Any], conditions: dict[str, Any], parameters: dict[str, str]) -> list[str]:
    """Logical ids of the template's own layers a function uses (``Fn::If`` resolved)."""
    found: list[str] = []
    for entry in function.get("Properties", {}).get("Layers", []):
        if isinstance(entry, dict) and "Fn::If" in entry:
            condition, when_true, when_false = entry["Fn::If"]
            entry = when_true if _resolve_condition(condition, conditions, parameters) else when_false
        if isinstance(entry, dict) and "Ref" in entry:
            found.append(entry["Ref"])
    return found


def measure(build_dir: Path, architecture: str) -> list[FunctionSize]:
    """Sizes of every zip function in a ``sam build`` directory, for the given ``Architecture``."""
    template = load_template(build_dir / "template.yaml")
    parameters = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    parameters["Architecture"] = architecture
    conditions = template.get("Conditions", {})
    resources = template["Resources"]
    sizes: list[FunctionSize] = []
    for name, resource in sorted(resources.items()):
        properties = resource.get("Properties", {})
        if resource.get("Type") != "AWS::Serverless::Function" or properties.get("PackageType") == "Image":
            continue
        code_dir = build_dir / str(properties["CodeUri"])
        if not code_dir.is_dir():
            raise FileNotFoundError(f"{name}: built code not found at {code_dir}")
        layers: dict[str, float] = {}
        for layer in _layer_ids(resource, conditions, parameters):
            content = build_dir / str(resources[layer]["Properties"]["ContentUri"])
            if not content.is_dir():
                raise FileNotFoundError(f"{name}: layer {layer} not built at {content}")
            layers[layer] = directory_bytes(content) / MB
        code_mb = directory_bytes(code_dir) / MB
        total = code_mb + sum(layers.values())
        limit = LIMITS_MB.get(name, LAMBDA_ZIP_LIMIT_MB)
        sizes.append(
            FunctionSize(
                function=name,
                code_mb=round(code_mb, 2),
                layers_mb={k: round(v, 2) for k, v in layers.items()},
                total_mb=round(total, 2),
                limit_mb=limit,
                ok=total <= limit,
            )
        )
    return sizes


def table(sizes: list[FunctionSize], architecture: str) -> str:
    """A markdown table of the sizes."""
    lines = [
        f"| function ({architecture}) | code MB | layers MB | total MB | limit MB | ok |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for size in sizes:
        layers = sum(size.layers_mb.values())
        cells = (size.function, f"{size.code_mb:.2f}", f"{layers:.2f}", f"{size.total_mb:.2f}", size.limit_mb)
        lines.append("| " + " | ".join(str(c) for c in cells) + f" | {'yes' if size.ok else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", type=Path, help="a `sam build --build-dir` output directory")
    parser.add_argument("--architecture", choices=("arm64", "x86_64"), required=True)
    parser.add_argument("--json", type=Path, help="also write the sizes here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    sizes = measure(args.build_dir, args.architecture)
    if not sizes:
        logger.error("no zip functions found in %s", args.build_dir)
        return 1
    logger.info("%s", table(sizes, args.architecture))
    if args.json:
        document = {"architecture": args.architecture, "functions": [asdict(s) for s in sizes]}
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    over = [s for s in sizes if not s.ok]
    for size in over:
        logger.error("%s is %.1f MB unzipped: over its %d MB limit", size.function, size.total_mb, size.limit_mb)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
