# The PyIsolate distribution built with nixpkgs' stdenv by the same build driver as
# `./dev dist`. Inputs come from build/sources.lock through fetchurl (same URLs, same
# SHA-256), placed in the driver's download cache so the driver never touches the
# network. UNVERIFIED: nixpkgs cannot be fetched on our build machines, so this file is
# parsed and partly evaluated in CI, never built there.
{ lib, stdenv, fetchurl, python3, pkg-config, patch, openssl, zlib, bzip2, xz, libffi
, sqlite, readline, ncurses, libuuid, gdbm, zstd, expat, src }:

let
  sources = import ./sources.nix;
  fetchLocked = s: fetchurl { urls = s.urls; sha256 = s.sha256; name = s.filename; };
  driverPython = python3.withPackages (ps: [ ps.rich ps.pyelftools ]);
in
stdenv.mkDerivation {
  pname = "pyisolate";
  version = "0.1.0.dev0";
  inherit src;

  nativeBuildInputs = [ driverPython pkg-config patch ];
  buildInputs = [ openssl zlib bzip2 xz libffi sqlite readline ncurses libuuid gdbm zstd expat ];

  # The driver's hardening profile sets every flag itself, and its audit checks them.
  hardeningDisable = [ "all" ];
  dontConfigure = true;

  buildPhase = ''
    runHook preBuild
    export PYISOLATE_CACHE=$TMPDIR/pyisolate-cache
    export PYISOLATE_SYSTEM_PACKAGES=external
    export SOURCE_DATE_EPOCH=''${SOURCE_DATE_EPOCH:-1}
    mkdir -p $PYISOLATE_CACHE/downloads
    cp ${fetchLocked sources.cpython} $PYISOLATE_CACHE/downloads/${sources.cpython.filename}
    PYTHONPATH=build python -m pyisolate_build dist
    runHook postBuild
  '';

  installPhase = ''
    runHook preInstall
    mkdir -p $out
    cp -a out/dist/current/. $out/
    runHook postInstall
  '';

  meta = {
    description = "Hardened, free-threaded CPython distribution for running untrusted code";
    platforms = [ "x86_64-linux" ];
    license = lib.licenses.asl20;
  };
}
