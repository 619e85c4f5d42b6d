#!/bin/sh
# The image's entrypoint: one image, three roles.
#   docker run IMAGE --framework ONNX ...     compile-model (flags first: the documented one-shot compile)
#   docker run IMAGE serve --host 0.0.0.0 ... neocompile serve (likewise worker, jobs, targets, run, compile, tuning)
#   docker run IMAGE serve (alone) with a model in /opt/ml/model: SageMaker's inference container contract
#                                                 (neocompile serve-model: /ping, /invocations on 8080)
#   docker run IMAGE bash | python ... | neocompile ... | compile-model ...   that program, as given
set -e
case "${1:-}" in
  '' | -*) exec compile-model "$@" ;;
  serve)
    # SageMaker hosting and batch transform start a model image as `docker run IMAGE serve`, nothing more, with the
    # model unpacked in /opt/ml/model; the job API is started with flags (--host, --store, ...).
    if [ "$#" -eq 1 ] && [ -d /opt/ml/model ]; then exec neocompile serve-model; fi
    exec neocompile "$@" ;;
  serve-model | worker | jobs | models | transform | targets | run | compile | tuning) exec neocompile "$@" ;;
  *) exec "$@" ;;
esac
