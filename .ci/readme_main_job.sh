#!/usr/bin/env bash
# Print the README's main-job command (the bash block under "Set up and run the main job"), as written.
set -eu
awk '/^Set up and run the main job/ {found = 1}
     found && block && /^```/ {exit}
     found && block {print}
     found && /^```bash/ {block = 1}' "$(dirname "$0")/../README.md"
