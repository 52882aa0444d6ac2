#!/bin/sh
# The demo image's entrypoint: greets its arguments (the image's CMD by default).
echo "$GREETING_LINE: hello, $*! (I am $(id -un) in $(pwd))"
