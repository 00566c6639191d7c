#!/bin/bash
# Serving chain of TIPC: export -> web_service.py -> pipeline_http_client.py -> SIGTERM.
#
#   bash test_tipc/test_serving.sh test_tipc/configs/AlexNet/model_linux_gpu_normal_normal_serving_python_linux_gpu_cpu.txt [WEIGHTS]
#
# WEIGHTS (or the config's --pretrained) is a .pdparams to export. With neither, the
# script makes a randomly initialised 1000-class AlexNet (paddle.seed(0)) in a temporary
# directory and deletes it at the end: enough to test the chain, not the accuracy.
# For every device of the config's --device line (gpu is skipped on a machine without
# one) it starts the service, waits for GET /health, queries demo.jpg with the client,
# checks err_no 0 and the class_id against deploy/py_inference/infer.py, and stops the
# service with SIGTERM, which must exit 0. Run from the repository root; $PYTHON
# overrides the config's python. Exit status 1 if any step failed, 2 for a bad config.
# Logs and results_serving.log go to $TIPC_SERVING_OUTPUT_DIR (default
# test_tipc/output_serving/<model_name>), apart from test_train_inference_python.sh's
# output directory, which that script empties at its start.

set -u

CONFIG=${1:?usage: bash test_tipc/test_serving.sh CONFIG [WEIGHTS]}
WEIGHTS_ARG=${2-}
HEALTH_TIMEOUT_S=180

# run_logged, status_check and print_summary; config_value/load_config are not used:
# this config is looked up by key, not by line number.
source "$(dirname "$0")/common_func.sh"

[[ -f "$CONFIG" ]] || { echo "error: config file '$CONFIG' not found" >&2; exit 2; }

REQUIRED_KEYS=(model_name python export --save-inference-dir --pretrained infer web_service --port --device client
               --img-path)
# Checked here, in the main shell: an exit inside $(config KEY) would only leave the
# command substitution.
for key in "${REQUIRED_KEYS[@]}"; do
    grep -q -- "^${key}:" "$CONFIG" || { echo "error: ${CONFIG}: no '${key}:' line" >&2; exit 2; }
done

# The value of KEY in the config ("key:value" lines).
config() {
    local line
    line=$(grep -m1 -- "^$1:" "$CONFIG")
    line=${line%$'\r'}
    printf '%s' "${line#*:}"
}

MODEL_NAME=$(config model_name)
PYTHON_BIN=${PYTHON:-$(config python)}
read -ra EXPORT_CMD <<< "$(config export)"
MODEL_DIR=$(config --save-inference-dir)
read -ra INFER_CMD <<< "$(config infer)"
read -ra SERVICE_CMD <<< "$(config web_service)"
IFS='|' read -ra DEVICES <<< "$(config --device)"
PORT=$(config --port)
read -ra CLIENT_CMD <<< "$(config client)"
IMG_PATH=$(config --img-path)
WEIGHTS=${WEIGHTS_ARG:-$(config --pretrained)}
[[ "$WEIGHTS" == "null" ]] && WEIGHTS=""

OUTPUT_DIR=${TIPC_SERVING_OUTPUT_DIR:-./test_tipc/output_serving/${MODEL_NAME}}
mkdir -p "$OUTPUT_DIR"
TIPC_STATUS_LOG="$OUTPUT_DIR/results_serving.log"
: > "$TIPC_STATUS_LOG"
URL="http://127.0.0.1:${PORT}"

SERVICE_PID=""
TEMP_DIR=$(mktemp -d)
cleanup() {
    # A service left running by a failed step is stopped the same way.
    if [[ -n "$SERVICE_PID" ]] && kill -0 "$SERVICE_PID" 2> /dev/null; then
        kill -TERM "$SERVICE_PID"
        wait "$SERVICE_PID"
    fi
    rm -rf "$TEMP_DIR"
}
trap cleanup EXIT

make_random_weights() {
    WEIGHTS="$TEMP_DIR/alexnet_random.pdparams"
    run_logged "$OUTPUT_DIR/random_weights.log" "$PYTHON_BIN" -c \
        "import sys; from paddlevision.models import alexnet; import paddle; paddle.seed(0); paddle.save(alexnet().state_dict(), sys.argv[1])" \
        "$WEIGHTS"
}

http_status() {
    "$PYTHON_BIN" -c "import sys, httpx
try:
    print(httpx.get(sys.argv[1], timeout=5).status_code)
except httpx.HTTPError:
    print(0)" "$1"
}

# Poll GET /health until 200; fails if the service exits or the time runs out.
wait_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT_S))
    while (( SECONDS < deadline )); do
        kill -0 "$SERVICE_PID" 2> /dev/null || return 1
        [[ "$(http_status "$URL/health")" == "200" ]] && return 0
        sleep 0.5
    done
    return 1
}

# class_id of the first image in infer.py's output (image_name: P, class_id: N, prob: X).
infer_class_id() {
    sed -n 's/^image_name: .*, class_id: \([0-9]*\), prob: .*/\1/p' "$1" | head -n1
}

# class_id of the client's answer ({'err_no': 0, ..., 'value': ['[N]', '[P]'], ...}).
client_class_id() {
    sed -n "s/^{'err_no': 0, .*'value': \['\[\([0-9]*\)\]', .*/\1/p" "$1" | head -n1
}

serve_and_query() {
    local device=$1 expected=$2
    local service_log="$OUTPUT_DIR/web_service_${device}.log" client_log="$OUTPUT_DIR/client_${device}.log"
    local service=("$PYTHON_BIN" "${SERVICE_CMD[@]}" "--model-dir=$MODEL_DIR" "--port=$PORT" "--device=$device")
    local rc=0 got
    if [[ "$(http_status "$URL/health")" != "0" ]]; then
        status_check 1 "port ${PORT} is already in use; free it or change --port in ${CONFIG}"
        return
    fi
    "${service[@]}" > "$service_log" 2>&1 &
    SERVICE_PID=$!
    wait_healthy || rc=1
    status_check "$rc" "$(quote_command "${service[@]}") > ${service_log} 2>&1 & (GET ${URL}/health)" "$service_log"
    (( rc == 0 )) || return

    run_logged "$client_log" "$PYTHON_BIN" "${CLIENT_CMD[@]}" "--img-path=$IMG_PATH" \
        "--url=$URL/alexnet/prediction" && cat "$client_log"
    got=$(client_class_id "$client_log")
    rc=0
    [[ -n "$got" && "$got" == "$expected" ]] || rc=1
    status_check "$rc" "check err_no 0 and class_id ${got:-none} == infer.py's ${expected} (${client_log})"

    rc=0
    kill -TERM "$SERVICE_PID"
    wait "$SERVICE_PID" || rc=$?
    SERVICE_PID=""
    status_check "$rc" "kill -TERM (web_service.py must exit 0, exited ${rc})" "$service_log"
}

main() {
    if [[ -z "$WEIGHTS" ]]; then
        make_random_weights || return
    fi
    run_logged "$OUTPUT_DIR/export.log" "$PYTHON_BIN" "${EXPORT_CMD[@]}" "--pretrained=$WEIGHTS" \
        "--save-inference-dir=$MODEL_DIR" || return
    local infer_log="$OUTPUT_DIR/infer.log" expected device
    run_logged "$infer_log" "$PYTHON_BIN" "${INFER_CMD[@]}" "--model-dir=$MODEL_DIR" "--img-path=$IMG_PATH" || return
    expected=$(infer_class_id "$infer_log")
    for device in "${DEVICES[@]}"; do
        if [[ "$device" == "gpu" ]] && (( $(visible_gpu_count) == 0 )); then
            echo "Skipping --device=gpu: no GPU on this machine"
            continue
        fi
        serve_and_query "$device" "$expected"
    done
}

main
print_summary
