# Source this first from a sharness test script:
#
#   . "$(dirname "$0")"/lib/init.sh
#
# It finds Debian's sharness (/usr/share/sharness/sharness.sh, or
# $SHARNESS_LIB), which loads sharness.d/*.sh (the flux-pam helpers).  Without
# sharness the script reports "1..0 # SKIP" and exits 0.

for _fps_lib in "${SHARNESS_LIB:-}" /usr/share/sharness/sharness.sh; do
	test -n "$_fps_lib" && test -r "$_fps_lib" && break
	_fps_lib=
done
if test -z "$_fps_lib"; then
	echo "1..0 # SKIP sharness is not installed (Debian package sharness)"
	exit 0
fi
. "$_fps_lib"
unset _fps_lib
