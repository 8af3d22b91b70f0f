#!/usr/bin/env bash
# Fails, naming file and line, when a tracked file refers to a path outside the repository
# (a folder beside the checkout, and the like): a user's fresh clone has nothing beside it.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
root=$(pwd -P)
status=0
# Quoted relative paths that climb (`"../x"`, `'../../x'`) must name something in the
# repository when resolved against the file's own directory (against the repository root
# they would escape). Prose (comments, Markdown) is not read: only quoted strings.
while IFS=: read -r file line quoted; do
    path=${quoted:1}
    target=$(realpath -m "$(dirname "$file")/$path")
    case "$target/" in
        "$root"/*) [ -e "$target" ] && continue ;;
    esac
    echo "$file:$line: '$path' is not a path inside the repository"
    status=1
done < <(git grep -I -n -o -E "[\"'](\.\./)+[A-Za-z0-9_.-]+" -- . ':!*.md' ':!Cargo.lock' ':!fuzz/Cargo.lock' ':!scripts/check_repo_paths.sh' || true)
# Python's os.path.join(HERE, "..", "..") spelling of the same.
if git grep -I -n -E '"\.\.", *"\.\."' -- '*.py'; then
    echo "the lines above climb out of the repository with os.path.join"
    status=1
fi
# The development machines' shared folder, by name.
if git grep -I -n -E '(^|[^A-Za-z])shared/(samples|notes|design)' -- . ':!scripts/check_repo_paths.sh'; then
    echo "the lines above name the development machines' shared folder, which a clone does not have"
    status=1
fi
exit $status
