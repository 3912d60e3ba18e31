"""The timm side of the benchmarks: runs in the reference venv (torch + timm), driven over stdin.

Started by `benchmarks/train_step.py` as a subprocess so that both frameworks are measured
alternately in one run. Protocol: one JSON object per line in, one JSON line out.
  {"op": "setup", "model": "resnetrs50", "batch": 16, "infer_batch": 32, "resolution": 160,
   "threads": 2}
  {"op": "train", "steps": 1}  -> {"seconds": [...]}   (forward, backward, SGD step)
  {"op": "infer", "steps": 1}  -> {"seconds": [...]}   (eval mode, no grad)
  {"op": "quit"}

Example (by hand):
  echo '{"op": "setup", "model": "resnetrs50"}' | .venv-ref/bin/python benchmarks/timm_worker.py
"""

import json
import sys
import time

import timm
import torch


def main() -> None:
    model = optimizer = None
    train_x = train_y = infer_x = None
    for line in sys.stdin:
        request = json.loads(line)
        op = request["op"]
        if op == "quit":
            break
        if op == "setup":
            torch.set_num_threads(request.get("threads", 2))
            torch.manual_seed(0)
            model = timm.create_model(request["model"], pretrained=False)
            optimizer = torch.optim.SGD(
                model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5
            )
            res = request.get("resolution", 160)
            train_x = torch.randn(request.get("batch", 16), 3, res, res)
            train_y = torch.randint(0, 1000, (request.get("batch", 16),))
            infer_x = torch.randn(request.get("infer_batch", 32), 3, res, res)
            reply = {"torch": torch.__version__, "timm": timm.__version__}
        elif op == "train":
            model.train()
            seconds = []
            for _ in range(request.get("steps", 1)):
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(
                    model(train_x), train_y, label_smoothing=0.1
                )
                loss.backward()
                optimizer.step()
                seconds.append(time.perf_counter() - start)
            reply = {"seconds": seconds}
        elif op == "infer":
            model.eval()
            seconds = []
            with torch.no_grad():
                for _ in range(request.get("steps", 1)):
                    start = time.perf_counter()
                    model(infer_x)
                    seconds.append(time.perf_counter() - start)
            reply = {"seconds": seconds}
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
