#!/bin/sh
# Installs shmq for C and C++ users, as cargo-c would:
#   $LIBDIR/libshmq.so.X.Y.Z   shared library, soname libshmq.so.0.MINOR (0.x) or .MAJOR
#   $LIBDIR/libshmq.so.<soname version>, $LIBDIR/libshmq.so   symlinks
#   $LIBDIR/libshmq.a          static library (link its Libs.private too: pkg-config --static)
#   $INCLUDEDIR/shmq.h         the committed, generated header
#   $INCLUDEDIR/shmq.hpp       the C++17 interface over it (header-only)
#   $LIBDIR/pkgconfig/shmq.pc
#
#   PREFIX=/usr/local scripts/install.sh        # default PREFIX=/usr/local
#   DESTDIR=/tmp/stage PREFIX=/usr scripts/install.sh   # staged install for packaging
#
# Then: cc app.c $(pkg-config --cflags --libs shmq)  (PKG_CONFIG_PATH=$PREFIX/lib/pkgconfig
# if $PREFIX is not searched by default; run ldconfig after a system-wide install).
# It builds the library in release mode in its own target directory
# (${CARGO_TARGET_DIR:-target}/install), without the CLI's dependencies.
set -eu
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
LIBDIR=${LIBDIR:-$PREFIX/lib}
INCLUDEDIR=${INCLUDEDIR:-$PREFIX/include}
DESTDIR=${DESTDIR:-}

VERSION=$(sed -n 's/^version = "\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)
MAJOR=${VERSION%%.*}
REST=${VERSION#*.}
MINOR=${REST%%.*}
if [ "$MAJOR" = 0 ]; then SOVERSION="0.$MINOR"; else SOVERSION="$MAJOR"; fi
SONAME="libshmq.so.$SOVERSION"

BUILD_DIR="${CARGO_TARGET_DIR:-$PWD/target}/install"
# One rustc run builds the cdylib (with the soname) and the staticlib; it also reports the
# system libraries a static link needs.
NOTES=$(CARGO_TARGET_DIR="$BUILD_DIR" cargo rustc --release --lib --no-default-features \
    -- -C "link-arg=-Wl,-soname,$SONAME" --print native-static-libs 2>&1) || {
    echo "$NOTES" >&2
    exit 1
}
PRIVATE_LIBS=$(echo "$NOTES" | sed -n 's/.*native-static-libs: //p' | tail -n 1)
OUT="$BUILD_DIR/release"

install -d "$DESTDIR$LIBDIR/pkgconfig" "$DESTDIR$INCLUDEDIR"
install -m 0755 "$OUT/libshmq.so" "$DESTDIR$LIBDIR/libshmq.so.$VERSION"
ln -sf "libshmq.so.$VERSION" "$DESTDIR$LIBDIR/$SONAME"
ln -sf "$SONAME" "$DESTDIR$LIBDIR/libshmq.so"
install -m 0644 "$OUT/libshmq.a" "$DESTDIR$LIBDIR/libshmq.a"
install -m 0644 include/shmq.h "$DESTDIR$INCLUDEDIR/shmq.h"
install -m 0644 include/shmq.hpp "$DESTDIR$INCLUDEDIR/shmq.hpp"
sed -e "s|@PREFIX@|$PREFIX|" -e "s|@LIBDIR@|$LIBDIR|" -e "s|@INCLUDEDIR@|$INCLUDEDIR|" \
    -e "s|@VERSION@|$VERSION|" -e "s|@PRIVATE_LIBS@|$PRIVATE_LIBS|" \
    scripts/shmq.pc.in >"$DESTDIR$LIBDIR/pkgconfig/shmq.pc"

echo "installed shmq $VERSION under $DESTDIR$PREFIX (soname $SONAME)"
