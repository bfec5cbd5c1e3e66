/* A stand-in for libnccl.so.2 on machines without NCCL (CPU CI): it answers ncclGetVersion only.
 *
 * Why: the plugin decides its NCCL policy from the library sglang's pynccl opens
 * (SGLANG_NCCL_SO_PATH, else torch's libnccl.so.2), and a real NCCL wheel is about
 * 216 MB with nothing to run on a CPU. The tests point SGLANG_NCCL_SO_PATH here and
 * choose the version with NCCL_STUB_VERSION (NCCL's integer code: 22809 = 2.28.9),
 * so the runtime's own resolution path (ctypes.CDLL, ncclGetVersion) is what runs.
 * NCCL_STUB_STATUS, when set, is the status it returns (an ncclResult_t; unset: 0,
 * ncclSuccess), so that a library answering with an error can be tried too.
 * Built by ci/envs.sh into .envs/libnccl-stub.so.
 */
#include <stdlib.h>

int ncclGetVersion(int *version) {
    const char *chosen = getenv("NCCL_STUB_VERSION");
    const char *status = getenv("NCCL_STUB_STATUS");
    *version = chosen ? atoi(chosen) : 23007;
    return status ? atoi(status) : 0;
}
