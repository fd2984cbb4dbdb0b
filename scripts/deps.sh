#!/usr/bin/env bash
# deps.sh: install the Debian packages concbench needs, only those missing.
# Not root: prints the exact apt-get line and fails, so nothing is half-installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git       # the build
  libgtest-dev libbenchmark-dev              # tests and micro-benchmarks
  node-llhttp                                # llhttp's C sources (HTTP parsing)
  libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libfmt-dev
  liburing-dev libuv1-dev libboost1.81-dev   # the uring, libuv and asio models
  python3 python3-matplotlib                 # plots (Debian's /usr/bin/python3)
  procps                                     # ps/pgrep used in diagnostics
  clang libclang-rt-14-dev                   # make fuzz: clang 14 and its libFuzzer runtime
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

line="apt-get install -y --no-install-recommends ${missing[*]}"
if [[ $(id -u) != 0 ]]; then
  echo "deps: missing Debian packages: ${missing[*]}" >&2
  echo "deps: run as root:  apt-get update && $line   (then make again)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Never remove anything of the user's to make room (Debian 12: libboost1.81-dev conflicts with
# libboost1.74-dev, which python3-matplotlib pulls in through scipy when installed with its
# recommends): say what conflicts and stop instead.
removals=$(apt-get install -s --no-install-recommends "${missing[@]}" 2>/dev/null | awk '/^Remv /{print $2}' | tr '\n' ' ')
if [[ -n $removals ]]; then
  echo "deps: installing ${missing[*]} would remove: $removals" >&2
  echo "deps: not done. Resolve the conflict by hand (e.g. apt-get remove those first), then make again." >&2
  exit 1
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps: installed"
