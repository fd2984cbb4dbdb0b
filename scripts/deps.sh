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
  python3-jinja2 chromium-headless-shell      # report.html (Jinja2) and its test in a headless browser
  python3-httptools python3-aiohttp python3-uvloop  # the Python models (models/py-*)
  nodejs                                     # the Node.js model (models/node-http)
  procps                                     # ps/pgrep used in diagnostics
  wrk apache2-utils                          # real clients (load --client wrk|ab)
  nginx apache2                              # the reference servers (models/nginx, models/apache-*); nginx also for vs_wrk.py
  clang libclang-rt-14-dev                   # make fuzz: clang 14 and its libFuzzer runtime
  g++-mingw-w64-x86-64 wine wine64           # the iocp model: cross-built for Windows, verified under Wine
  python3-yaml                               # tests: the GitHub workflow file is valid YAML
)
# Packages whose postinst would start a system service: the benchmark starts them itself with
# its own configuration, so the package's service must neither start nor keep running.
service_packages=(nginx apache2)

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

# No service may start during the install: Debian's policy-rc.d convention (exit 101 = action
# forbidden), honoured by invoke-rc.d and deb-systemd-invoke. An existing policy is left alone.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# concbench deps.sh: no service starts while packages install\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=1
  trap 'rm -f "$policy"' EXIT
fi
daemons() { ps -eo pid=,comm= | awk '$2 == "nginx" || $2 == "apache2" {print $1}' | sort; }
before=$(daemons)
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if ((own_policy)); then rm -f "$policy"; trap - EXIT; fi
# Belt and braces: a daemon the install started anyway is stopped, by its pid only (nginx or
# apache2 processes that were running before, the user's own, are not touched).
started=$(comm -13 <(echo "$before") <(daemons) | tr '\n' ' ')
if [[ -n ${started// /} ]]; then
  echo "deps: stopping daemon(s) the package install started: pid $started"
  kill $started 2>/dev/null || true
  sleep 2
  left=$(comm -12 <(echo "$started" | tr ' ' '\n' | sort) <(daemons) | tr '\n' ' ')
  [[ -z ${left// /} ]] || kill -9 $left 2>/dev/null || true
fi
# The packages' services stay off at boot too: the benchmark runs its own instances.
for s in "${service_packages[@]}"; do
  if [[ " ${missing[*]} " == *" $s "* ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now "$s" >/dev/null 2>&1 || true
  fi
done
echo "deps: installed"
