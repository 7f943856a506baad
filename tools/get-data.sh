#!/bin/sh
# Make sure a dataset's IDX files are where clcnn looks; install Debian's package when possible.
# Usage: sh tools/get-data.sh fashion-mnist
name=${1:-fashion-mnist}
have() {
  for d in "${CLCNN_DATA:+$CLCNN_DATA/$name}" "$HOME/.cache/clcnn/$name" "/usr/share/datasets/$name"; do
    [ -n "$d" ] && [ -e "$d/train-images-idx3-ubyte.gz" -o -e "$d/train-images-idx3-ubyte" ] && return 0
  done
  return 1
}
have && exit 0
if [ "$name" = fashion-mnist ]; then
  sh "$(dirname "$0")/apt-install.sh" dataset-fashion-mnist && have && exit 0
fi
cat >&2 <<MSG
clcnn: $name not found. Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz
and t10k-labels-idx1-ubyte.gz into ~/.cache/clcnn/$name (or a folder named by \$CLCNN_DATA/$name),
or on Debian/Ubuntu run: sudo apt-get install dataset-fashion-mnist
MSG
exit 1
