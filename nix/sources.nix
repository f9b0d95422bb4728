# The build's pinned inputs, read from build/sources.lock (the one list of external
# inputs), as an attribute set by name. Needs no nixpkgs: `nix-instantiate --eval` works.
let
  lock = builtins.fromTOML (builtins.readFile ../build/sources.lock);
in
builtins.listToAttrs (map (s: { name = s.name; value = s; }) lock.source)
