#!/usr/bin/env bash
# Installs everything basic_tf needs on a fresh Debian machine (run as root): the Fashion-MNIST
# Debian package for the demo, then the package itself (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "[install] apt-get install dataset-fashion-mnist"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi
echo "[install] pip install -e .[test]"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[test]"
