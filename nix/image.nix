# The runtime base image: the distribution, with pyisolate-python as its entrypoint.
{ dockerTools, pyisolate }:

dockerTools.buildLayeredImage {
  name = "pyisolate";
  tag = pyisolate.version;
  contents = [ pyisolate ];
  config = {
    Entrypoint = [ "${pyisolate}/bin/pyisolate-python" ];
    WorkingDir = "/work";
  };
}
