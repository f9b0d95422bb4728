{
  description = "PyIsolate: a hardened, free-threaded CPython distribution for running untrusted code";

  # Pinned in flake.lock (nixos-24.11 at 50ab793, 2025-06-30). UNVERIFIED on our build
  # machines, which cannot reach nixpkgs: CI parses every .nix file and evaluates the
  # parts that need no nixpkgs (nix/sources.nix).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs { inherit system; };
      pyisolate = pkgs.callPackage ./nix/package.nix { src = self; };
    in
    {
      packages.${system} = {
        default = pyisolate;
        inherit pyisolate;
        image = pkgs.callPackage ./nix/image.nix { inherit pyisolate; };
      };
      devShells.${system}.default = pkgs.mkShell {
        packages = [ (pkgs.python3.withPackages (ps: [ ps.nox ps.rich ps.pyelftools ps.pytest ])) pkgs.ruff ];
      };
    };
}
