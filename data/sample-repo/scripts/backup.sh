#!/usr/bin/env bash
# Back up the tasklet database with SQLite's online backup API, keeping the newest N copies.
#
#   scripts/backup.sh [DB] [DEST_DIR]
#
# The online backup is safe while tasklet is running, unlike `cp`, which can copy a half-written page.
set -euo pipefail

db="${1:-${TASKLET_DB_PATH:-$HOME/.local/share/tasklet/tasks.db}}"
dest="${2:-$HOME/.local/share/tasklet/backups}"
keep="${TASKLET_BACKUP_KEEP:-14}"

die() {
    echo "backup: $*" >&2
    exit 1
}

command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 is not installed"
[[ -f "$db" ]] || die "no database at $db"
[[ "$keep" =~ ^[0-9]+$ ]] && (( keep > 0 )) || die "TASKLET_BACKUP_KEEP must be a positive number, got '$keep'"

mkdir -p "$dest"
stamp="$(date +%Y%m%d-%H%M%S)"
target="$dest/tasks-$stamp.db"
tmp="$target.part"

trap 'rm -f "$tmp"' EXIT
sqlite3 "$db" ".backup '$tmp'"

# Refuse to keep a copy that does not pass SQLite's own check.
if [[ "$(sqlite3 "$tmp" 'PRAGMA integrity_check;')" != "ok" ]]; then
    die "integrity check failed for the new backup; the old backups were left alone"
fi
mv "$tmp" "$target"
gzip -9 "$target"
echo "backup: wrote $target.gz ($(du -h "$target.gz" | cut -f1))"

# Rotate: newest first, delete everything after the first $keep.
count=0
while IFS= read -r old; do
    count=$((count + 1))
    if (( count > keep )); then
        rm -f -- "$old"
        echo "backup: removed $(basename "$old")"
    fi
done < <(ls -1t "$dest"/tasks-*.db.gz 2>/dev/null)
