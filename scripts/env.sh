# Sourced by the scripts: the environment every process of a run shares.
# libnss-wrapper resolves the sandbox's AWS-shaped endpoint names to loopback
# for this process tree only, so production host names, SNI and hostname
# verification stay on everywhere (the AWS IoT Device SDK takes one host name
# for DNS, SNI and verification alike). It must be set before Python starts.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_nss=$(ls /usr/lib/*/libnss_wrapper.so 2>/dev/null | head -n1 || true)
if [ -n "$_nss" ]; then
  case ":${LD_PRELOAD:-}:" in *":$_nss:"*) ;; *) export LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD:}$_nss" ;; esac
  export NSS_WRAPPER_HOSTS="$_root/infra/sandbox/data/hosts"
fi
export PATH="$_root/.venv/bin:$PATH:/usr/sbin"
unset _root _nss
