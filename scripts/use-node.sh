# Source this in a development shell: `source scripts/use-node.sh` (Node 24) or `source scripts/use-node.sh 22`.
# Puts the project's Node first on PATH, installing it on first use, so nobody works on the machine's Node 20.
_amrikyy_node_bin="$(bash "$(dirname "${BASH_SOURCE[0]}")/provision-node.sh" "${1:-24}")" &&
  export PATH="$_amrikyy_node_bin:$PATH" &&
  hash -r &&
  echo "node $(node --version) from $_amrikyy_node_bin" >&2
unset _amrikyy_node_bin
