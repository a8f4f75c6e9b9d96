#!/usr/bin/env python3
"""Render an Envoy config template: render.py TEMPLATE CONFIG_JSON KEY=VALUE...

Replaces {{KEY}} with VALUE, and {{EMR_CONFIG}} with the plugin configuration
read from CONFIG_JSON, compacted to one line (it sits in a single-quoted YAML
string, so it must not contain a single quote).
"""
import json
import sys


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    template_path, config_path, *pairs = sys.argv[1:]
    with open(template_path, encoding="utf-8") as f:
        text = f.read()
    with open(config_path, encoding="utf-8") as f:
        config = json.dumps(json.load(f), separators=(",", ":"))
    if "'" in config:
        print(f"{config_path}: the configuration must not contain a single quote", file=sys.stderr)
        return 1
    text = text.replace("{{EMR_CONFIG}}", config)
    for pair in pairs:
        key, _, value = pair.partition("=")
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        missing = sorted({part.split("}}")[0] for part in text.split("{{")[1:]})
        print(f"unrendered placeholders: {', '.join(missing)}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
