#!/bin/sh
# Entrypoint of the tabpfn-gateway image: upgrade the database schema only when asked
# (TABPFN_GATEWAY_MIGRATE_ON_START=true), then run the command (default: tabpfn-gateway serve).
# Several replicas should leave it false and let one migration job run `tabpfn-gateway db upgrade`.
set -eu

migrate="$(printf '%s' "${TABPFN_GATEWAY_MIGRATE_ON_START:-false}" | tr '[:upper:]' '[:lower:]')"
case "$migrate" in
  1 | true | yes | on)
    tabpfn-gateway db upgrade
    ;;
  0 | false | no | off | "")
    ;;
  *)
    echo "error: TABPFN_GATEWAY_MIGRATE_ON_START must be true or false" >&2
    exit 64
    ;;
esac

# Decided here, once: the server started below must not migrate again.
TABPFN_GATEWAY_MIGRATE_ON_START=false
export TABPFN_GATEWAY_MIGRATE_ON_START
exec "$@"
