#!/usr/bin/env python3
"""Render an Envoy config template: render.py TEMPLATE CONFIG_JSON KEY=VALUE...

Replaces {{KEY}} with VALUE, and {{EMR_CONFIG}} with the plugin configuration
read from CONFIG_JSON, compacted to one line (it sits in a single-quoted YAML
string, so it must not contain a single quote).

{{MAX_BODY_BYTES}} is filled from the configuration's intake.max_body_bytes
(65536 when it gives none): the buffer filter after the emr-edge filter must
let through every body the intake accepts, or Envoy answers the bodies in
between with its own plain-text 413 before emr-edge sees them. So one number,
in the configuration, sets both. A template that writes max_request_bytes by
hand is refused when it is lower than intake.max_body_bytes.
"""
import json
import re
import sys

# emr-core's DEFAULT_MAX_BODY_BYTES (core/src/config.rs); tests/tests/configs.rs
# checks that the two agree.
DEFAULT_MAX_BODY_BYTES = 65536


def max_body_bytes(config) -> int:
    intake = config.get("intake") if isinstance(config, dict) else None
    value = intake.get("max_body_bytes") if isinstance(intake, dict) else None
    # A value of the wrong kind is left for emr-edge to refuse at start,
    # naming the field; the buffer limit then keeps the default.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return DEFAULT_MAX_BODY_BYTES


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    template_path, config_path, *pairs = sys.argv[1:]
    with open(template_path, encoding="utf-8") as f:
        text = f.read()
    with open(config_path, encoding="utf-8") as f:
        parsed = json.load(f)
    config = json.dumps(parsed, separators=(",", ":"))
    if "'" in config:
        print(f"{config_path}: the configuration must not contain a single quote", file=sys.stderr)
        return 1
    limit = max_body_bytes(parsed)
    text = text.replace("{{EMR_CONFIG}}", config)
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key == "MAX_BODY_BYTES":
            print(
                "MAX_BODY_BYTES comes from intake.max_body_bytes in the configuration; "
                "set it there",
                file=sys.stderr,
            )
            return 2
        text = text.replace("{{" + key + "}}", value)
    text = text.replace("{{MAX_BODY_BYTES}}", str(limit))
    if "{{" in text:
        missing = sorted({part.split("}}")[0] for part in text.split("{{")[1:]})
        print(f"unrendered placeholders: {', '.join(missing)}", file=sys.stderr)
        return 1
    for match in re.finditer(r"max_request_bytes:\s*(\d+)", text):
        if int(match.group(1)) < limit:
            line = text.count("\n", 0, match.start()) + 1
            print(
                f"{template_path}:{line}: the buffer filter's max_request_bytes "
                f"({match.group(1)}) is lower than intake.max_body_bytes ({limit}) in "
                f"{config_path}: Envoy would refuse the bodies in between with its own 413. "
                "Write max_request_bytes: {{MAX_BODY_BYTES}} in the template.",
                file=sys.stderr,
            )
            return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
