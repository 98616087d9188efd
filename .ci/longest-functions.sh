#!/bin/sh
# The longest functions of the workspace's Rust sources, longest first, as
# "LINES FILE:LINE NAME". A function runs from its `fn` line to the first line after it that
# closes a brace at the `fn` line's indentation (rustfmt's layout).
#
#   longest-functions.sh [N]    lists the N longest (default 10)
#   longest-functions.sh --check
#                               lists every function of LIMIT lines or more, and exits 1 if
#                               there is any
set -eu
cd "$(dirname "$0")/.."

# Functions must stay under this many lines, tests included.
LIMIT=80

every_function() {
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
    done | sort -rn
}

if [ "${1:-}" = "--check" ]; then
    too_long=$(every_function | awk -v limit="$LIMIT" '$1 >= limit')
    if [ -n "$too_long" ]; then
        echo "functions of $LIMIT lines or more (split them into named steps):"
        echo "$too_long"
        exit 1
    fi
    exit 0
fi
every_function | head -"${1:-10}"
