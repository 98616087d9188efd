#!/bin/sh
# The longest functions of the workspace's Rust sources, longest first, as
# "LINES FILE:LINE NAME". A function runs from its `fn` line to the first line after it that
# closes a brace at the `fn` line's indentation (rustfmt's layout).
set -eu
cd "$(dirname "$0")/.."
find crates tests benches fuzz -name '*.rs' -not -path '*/target/*' | sort | while read -r file; do
    awk -v file="$file" '
        !open && match($0, /^ *((pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?fn [a-z_0-9]+)/) {
            if ($0 ~ /;[ ]*$/) next
            indent = match($0, /[^ ]/) - 1
            name = $0; sub(/^ */, "", name); sub(/\(.*/, "", name); sub(/<.*/, "", name)
            start = NR; open = 1
            if ($0 ~ /\}[ ]*$/ && $0 ~ /\{/) { print 1, file ":" start, name; open = 0 }
            next
        }
        open && match($0, /[^ ]/) - 1 == indent && $0 ~ /^ *\}/ {
            print NR - start + 1, file ":" start, name; open = 0
        }
    ' "$file"
done | sort -rn | head -"${1:-10}"
