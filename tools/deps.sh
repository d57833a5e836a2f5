#!/bin/sh
# Finds the libraries anonproxy builds against with pkg-config and prints them as make
# variables. When one is missing and we run as root on Debian, installs the Debian
# packages first; otherwise says which packages to install and fails.
set -eu
PCS="libevent libevent_openssl openssl libxxhash jansson criterion zlib"
DEBS="pkg-config libevent-dev libssl-dev libxxhash-dev libjansson-dev libcriterion-dev zlib1g-dev"

missing() { command -v pkg-config >/dev/null 2>&1 || return 0; ! pkg-config --exists $PCS; }

if missing; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "deps: installing $DEBS" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get install -y -q $DEBS >&2 || { apt-get update -q >&2 && apt-get install -y -q $DEBS >&2; }
	else
		echo "deps: missing libraries; as root run: apt-get install $DEBS" >&2
		exit 1
	fi
fi
missing && { echo "deps: pkg-config still cannot find: $PCS" >&2; exit 1; }
echo "PKG_CFLAGS := $(pkg-config --cflags $PCS)"
echo "PKG_LIBS := $(pkg-config --libs libevent libevent_openssl openssl libxxhash jansson zlib)"
echo "TEST_LIBS := $(pkg-config --libs criterion)"
