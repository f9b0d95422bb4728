"""Local conan recipe: libsodium 1.0.22 as a static, position-independent archive.

Used only by the build driver (build/pyisolate_build/sodium.py), which runs

    conan create libsodium/ --no-remote -pr:a <profile it writes> \
        -c user.pyisolate:tarball=<verified download> -c user.pyisolate:sha256=<from the lock>

with CONAN_HOME under PyIsolate's build cache. No remote is ever consulted: the recipe has
no requirements and its source is the tarball that build/sources.lock pins (the driver
fetched and verified it; source() checks the hash again before unpacking). The profile
carries the compiler and the distribution's hardening flags; the recipe adds -fPIC
(fPIC option) and asks libsodium's configure for a static library only.
"""

from __future__ import annotations

import os

from conan import ConanFile
from conan.errors import ConanInvalidConfiguration
from conan.tools.files import check_sha256, copy, rm, rmdir, unzip
from conan.tools.gnu import Autotools, AutotoolsToolchain
from conan.tools.layout import basic_layout


class LibsodiumConan(ConanFile):
    name = "libsodium"
    version = "1.0.22"
    license = "ISC"
    description = "libsodium, static and position-independent, for PyIsolate's sealed broker"
    package_type = "static-library"
    settings = "os", "arch", "compiler", "build_type"
    # One configuration only: static (linked into _pyisolate with --exclude-libs,ALL) and
    # PIC (it ends up inside a shared object).
    options = {"shared": [False], "fPIC": [True]}  # noqa: RUF012 (conan reads class attributes)
    default_options = {"shared": False, "fPIC": True}  # noqa: RUF012

    def configure(self):
        # C only.
        self.settings.rm_safe("compiler.libcxx")
        self.settings.rm_safe("compiler.cppstd")

    def validate(self):
        if self.settings.os != "Linux":
            raise ConanInvalidConfiguration("PyIsolate builds libsodium for Linux only")

    def layout(self):
        # Built in its source tree: then libsodium's configure sets srcdir to "." and every
        # -I path the compiler sees is relative. Out of tree they name conan's build folder,
        # a random name per build, and clang records each object's whole command line.
        basic_layout(self, src_folder="src")
        self.folders.build = self.folders.source

    def source(self):
        tarball = self.conf.get("user.pyisolate:tarball", check_type=str)
        sha256 = self.conf.get("user.pyisolate:sha256", check_type=str)
        if not tarball or not sha256:
            raise ConanInvalidConfiguration(
                "libsodium: pass the verified tarball with -c user.pyisolate:tarball=PATH "
                "-c user.pyisolate:sha256=HEX (the build driver does; nothing is downloaded here)"
            )
        check_sha256(self, tarball, sha256)
        unzip(self, tarball, destination=self.source_folder, strip_root=True)

    def generate(self):
        tc = AutotoolsToolchain(self)
        tc.configure_args += [
            "--disable-shared",
            "--enable-static",
            "--with-pic",
            "--disable-dependency-tracking",
            "--disable-debug",
            # Portable code paths chosen at run time (libsodium's CPU dispatch); never
            # -march=native, which would tie the archive to the build machine.
            "--disable-opt",
        ]
        tc.generate()

    def build(self):
        autotools = Autotools(self)
        autotools.configure()
        autotools.make()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        Autotools(self).install()
        rm(self, "*.la", os.path.join(self.package_folder, "lib"))
        rmdir(self, os.path.join(self.package_folder, "lib", "pkgconfig"))

    def package_info(self):
        self.cpp_info.libs = ["sodium"]
        self.cpp_info.system_libs = ["pthread"]
