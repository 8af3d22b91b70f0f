#!/usr/bin/env python3
"""Transformers benchmark (issue 21), run by hand, never by tests: for the transformer fixtures
and a BERT-base-shaped model with random weights (hidden 384, 12 heads, 6 layers, FFN 1536,
vocabulary 30522, like all-MiniLM-L6; exported here, not committed), measures parameters, MACs
(counted from the shapes onnxruntime gives every node output), onnxruntime and tract latency
before and after each `onnx-prune` command of COMMANDS, and what onnxsim 0.8.1's attention-head,
transformer-block and vocabulary pruning do to the same models (whether they change anything,
pass `onnx.checker` full check and run in onnxruntime with the same output shapes).

    python3 -m venv --system-site-packages bench/transformers/.venv
    bench/transformers/.venv/bin/pip install onnxsim==0.8.1 tract==0.23.9
    bench/transformers/.venv/bin/python bench/transformers/bench.py \\
        --onnx-prune target/release/onnx-prune [--models bert_torchscript,minilm_dynamo] [--skip-onnxsim]

Writes bench/out/transformers/results.json and prints the tables bench/transformers/README.md
quotes. An onnx-prune command that exits 2 (a flag this build does not have, a model it
refuses) is skipped with its message.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "fixtures", "transformers")
OUT = os.path.join(ROOT, "bench", "out", "transformers")
sys.path.append(FIXTURES)

# onnx-prune commands run on every model: a label and the arguments after `shrink MODEL -o OUT`.
# {calibration} is the model's calibration .npz (its inputs file when it has no split), {vocab}
# its token ids as `FILE.npz:input_ids`, {heads} an `--include` pattern matching exactly the
# producers of the model's open head groups (read from `--dry-run`: "N heads of D"; a model
# without one skips the command). A command that exits 2 (a flag this build lacks, a model it
# refuses) is skipped with its message.
COMMANDS = [
    ("all 50%", ["--sparsity", "0.5"]),
    ("heads 50%", ["--sparsity", "0.5", "--include", "{heads}"]),
    ("heads 50% calibrated", ["--sparsity", "0.5", "--include", "{heads}",
                              "--calibration", "{calibration}"]),
    ("drop 1 layer", ["--drop-layers", "1", "--calibration", "{calibration}"]),
    ("vocab from data", ["--vocab-from", "{vocab}", "--keep-token", "0", "1", "2", "3",
                         "--unknown-token", "3"]),
]

SEQUENCE = 128
# The fixtures' position tables have 64 rows (text_bert's 32): they are timed at that many
# tokens; MiniLM at 128.
FIXTURE_SEQUENCE = 64
TEXT_BERT_SEQUENCE = 32
FIXTURE_MODELS = ["bert_torchscript", "bert_dynamo", "bert_ort_attention", "bert_ort_mha",
                  "distilbert_torchscript", "distilbert_dynamo", "vit_torchscript", "vit_dynamo",
                  "gpt2_torchscript", "gpt2_dynamo", "llama_torchscript", "llama_dynamo",
                  "whisper_encoder_torchscript", "whisper_encoder_dynamo",
                  "digits_vit_torchscript", "digits_vit_dynamo", "text_bert_torchscript",
                  "text_bert_dynamo"]


def export_minilm():
    """A BERT-base-shaped encoder (all-MiniLM-L6's shape) with random weights, both exporters."""
    import torch
    import transformers as T

    import export as ex
    from architectures import _trained_look

    ex.quiet()
    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                          num_attention_heads=12, intermediate_size=1536)
    # with a little noise on every parameter, as the fixtures, so that the figures stay those of
    # a model without equal tensors (a trained one): a fresh init's equal biases and gains are
    # shared between layers by both exporters, which blocked every group before 2a53cbf; now each
    # reader gets its own copy and the same groups open (README.md, "Without the noise")
    model = _trained_look(T.BertModel(config, add_pooling_layer=False), 0)
    gen = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(0, 30522, (4, 16), generator=gen),
              "attention_mask": torch.ones(4, 16, dtype=torch.int64),
              # given, as sentence-transformers exports do: BertModel's default (a buffer
              # sliced to the sequence) is traced at the export length by TorchScript
              "token_type_ids": torch.zeros(4, 16, dtype=torch.int64)}
    dynamic = dict.fromkeys(inputs, {0: "batch", 1: "sequence"})
    paths = {}
    for exporter in ("torchscript", "dynamo"):
        path = os.path.join(OUT, f"minilm_{exporter}.onnx")
        if not os.path.exists(path):
            ex.export(model, inputs, path, exporter,
                      {"last_hidden_state": {0: "batch", 1: "sequence"}}, dynamic)
        paths[f"minilm_{exporter}"] = path
    np.savez(os.path.join(OUT, "minilm_inputs.npz"), **{k: v.numpy() for k, v in inputs.items()})
    return paths


def feeds_for(model_path, sequence, seed=0):
    """One sample at `sequence` tokens for each graph input (ids below 132, so that every model
    shares them with text_bert's vocabulary; masks of ones); other inputs at their fixed shape."""
    rng = np.random.default_rng(seed)
    model = onnx.load(model_path, load_external_data=False)
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for v in model.graph.input:
        if v.name in init:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (1 if i == 0 else sequence)
                for i, d in enumerate(t.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype == np.int64 and "mask" in v.name:
            feeds[v.name] = np.ones(dims, dtype)
        elif dtype == np.int64 and "type" in v.name:
            feeds[v.name] = np.zeros(dims, dtype)
        elif dtype == np.int64:
            feeds[v.name] = rng.integers(4, 132, dims).astype(dtype)
        else:
            feeds[v.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


def parameters(path):
    model = onnx.load(path)
    return int(sum(np.prod(t.dims) for t in model.graph.initializer))


def macs(path, feeds):
    """Multiply-accumulates of MatMul, Gemm, Conv and the fused attention ops at `feeds`."""
    from facts import Graph

    g = Graph(path, feeds)
    total = 0
    for n in g.nodes:
        out = g.shape(n.output[0]) if n.output and n.output[0] else None
        if out is None:
            continue
        if n.op_type in ("MatMul", "Gemm", "FusedMatMul"):
            a = g.shape(n.input[0])
            trans_a = any(x.name == "transA" and x.i for x in n.attribute)
            k = a[0] if trans_a and len(a) == 2 else a[-1]
            total += int(np.prod(out)) * k
        elif n.op_type == "Conv":
            w = g.shape(n.input[1])
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Attention", "MultiHeadAttention", "GroupQueryAttention"):
            batch, seq, hidden = out
            if n.op_type == "Attention":
                total += batch * seq * g.shape(n.input[1])[0] * g.shape(n.input[1])[1]
            total += 2 * batch * seq * seq * hidden  # Q·Kᵀ and P·V over all heads
    return total


def ort_latency(path, feeds, runs):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    run_feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
    session.run(None, run_feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, run_feeds)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)


def tract_latency(path, feeds, runs):
    """tract's Python bindings: the model as it is (free dimensions symbolic) or, when tract
    cannot analyse it so, with every input's shape fixed to `feeds`'. Each way fails on some of
    these exports in tract 0.23.9 (symbolic: `Flatten` of the TorchScript mask path, an `Add` of
    the dynamo causal mask; fixed: the dynamo exports' embedding `Gather`). An error message when
    both fail (the fused com.microsoft ops)."""
    import tract

    errors = []
    for fixed in (False, True):
        try:
            model = tract.onnx().load(path)
            names = [model.input_name(i) for i in range(model.input_count())]
            if fixed:
                for i, name in enumerate(names):
                    x = feeds[name]
                    kind = {np.dtype(np.int64): "i64", np.dtype(np.float32): "f32"}[x.dtype]
                    model.set_input_fact(i, ",".join(map(str, x.shape)) + f",{kind}")
            runnable = model.into_model().into_runnable()
            args = [feeds[name] for name in names]
            runnable.run(args)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                runnable.run(args)
                times.append(time.perf_counter() - start)
            return round(float(np.median(times)) * 1000, 3)
        except Exception as e:
            errors.append(str(e).splitlines()[0][:160])
    return " / ".join(errors)


def measure(path, sequence, runs):
    feeds = feeds_for(path, sequence)
    return {"parameters": parameters(path), "macs": macs(path, feeds),
            "bytes": os.path.getsize(path), "ort_ms": ort_latency(path, feeds, runs),
            "tract_ms": tract_latency(path, feeds, runs)}


def data_files(name):
    """The calibration data and the token ids (`FILE:input_ids`) of a fixture."""
    base = name
    for suffix in ("_ort_attention", "_ort_mha", "_torchscript", "_dynamo"):
        base = base.removesuffix(suffix)
    for candidate in (f"{base}_calibration.npz", f"{base}_inputs.npz"):
        path = os.path.join(FIXTURES, candidate)
        if os.path.exists(path):
            return path, f"{path}:input_ids"
    path = os.path.join(OUT, "minilm_inputs.npz")
    return path, f"{path}:input_ids"


def head_pattern(binary, path):
    """An `--include` regex matching exactly the producers of the open head groups that
    `shrink --dry-run` lists ("group N (open): C channels, H heads of D"), or None."""
    run = subprocess.run([binary, "shrink", path, "--dry-run"], capture_output=True, text=True)
    producers, heads = [], False
    for line in run.stdout.splitlines():
        if line.startswith("group "):
            heads = "(open)" in line and " heads of " in line
        elif heads and line.startswith("  producers: "):
            producers += line.removeprefix("  producers: ").split(", ")
    if not producers:
        return None
    escape = lambda name: "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in name)
    return "^(?:" + "|".join(escape(p) for p in sorted(set(producers))) + ")$"


def run_onnx_prune(binary, name, path, sequence, runs):
    calibration, vocab = data_files(name)
    heads = head_pattern(binary, path)
    results = {}
    for label, args in COMMANDS:
        out = os.path.join(OUT, f"{name}.{label.replace(' ', '_').replace('%', '')}.onnx")
        if heads is None and "{heads}" in args:
            results[label] = {"skipped": "no open head group (--dry-run)"}
            continue
        args = [a.format(calibration=calibration, vocab=vocab, heads=heads) for a in args]
        start = time.perf_counter()
        run = subprocess.run([binary, "shrink", path, "-o", out, *args], capture_output=True,
                             text=True)
        seconds = round(time.perf_counter() - start, 2)
        if run.returncode != 0:
            message = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[0]
            results[label] = {"skipped": f"exit {run.returncode}: {message[:200]}"}
            continue
        results[label] = {**measure(out, sequence, runs), "shrink_s": seconds,
                          "checker": checker(out), "onnxruntime": same_shapes(path, out, sequence)}
    return results


def checker(path):
    try:
        onnx.checker.check_model(path, full_check=True)
        return "passes"
    except Exception as e:
        return str(e).splitlines()[0][:200]


def same_shapes(original, shrunk, sequence):
    """Whether onnxruntime gives the shrunk model's outputs the original's shapes."""
    import onnxruntime as ort

    feeds = feeds_for(original, sequence)
    shapes = []
    for path in (original, shrunk):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        shapes.append([o.shape for o in session.run(
            None, {i.name: feeds[i.name] for i in session.get_inputs()})])
    return "same output shapes" if shapes[0] == shapes[1] else f"shapes {shapes[1]} vs {shapes[0]}"


def onnxsim_results(name, path, sequence):
    """What each of onnxsim 0.8.1's transformer prunings does to the model."""
    import onnxruntime as ort
    import onnxsim

    calibration, _ = data_files(name)
    feeds = feeds_for(path, sequence)
    original = onnx.load(path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    want = [o.shape for o in session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})]
    data = np.load(calibration)
    batches = [{i.name: data[i.name][k:k + 1] for i in session.get_inputs()}
               for k in range(min(8, len(data[session.get_inputs()[0].name])))]
    keep = sorted(set(np.unique(data["input_ids"]).tolist()) | {0, 1, 2, 3}) \
        if "input_ids" in data else None
    calls = {
        "attention_head_pruning 50%": lambda: onnxsim.apply_attention_head_pruning(
            original, sparsity=0.5),
        "transformer_block_pruning 1 block": lambda: onnxsim.apply_transformer_block_pruning(
            original, calibration_data=batches, num_blocks_to_drop=1),
        "embedding_vocab_pruning": (lambda: onnxsim.apply_embedding_vocab_pruning(
            original, keep_token_ids=keep, input_name="input_ids")) if keep else None,
    }
    results = {}
    for label, call in calls.items():
        if call is None:
            results[label] = {"skipped": "no input_ids"}
            continue
        try:
            result = call()
        except Exception as e:
            results[label] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        model = result.model if hasattr(result, "model") else result
        entry = {"changed": model.SerializeToString() != original.SerializeToString(),
                 "parameters": int(sum(np.prod(t.dims) for t in model.graph.initializer))}
        if hasattr(result, "matched"):
            entry["matched"] = bool(result.matched)
        try:
            onnx.checker.check_model(model, full_check=True)
            entry["checker"] = "passes"
        except Exception as e:
            entry["checker"] = str(e).splitlines()[0][:200]
        try:
            s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            run_feeds = {i.name: feeds[i.name] for i in s.get_inputs()}
            if keep is not None and hasattr(result, "id_map") and "input_ids" in run_feeds:
                run_feeds["input_ids"] = np.vectorize(lambda i: result.id_map.get(int(i), 0))(
                    run_feeds["input_ids"]).astype(np.int64)
            got = [o.shape for o in s.run(None, run_feeds)]
            entry["onnxruntime"] = "same output shapes" if got == want else f"shapes {got}"
        except Exception as e:
            entry["onnxruntime"] = str(e).splitlines()[0][:200]
        results[label] = entry
    return results


def tables(results):
    """The README's tables (markdown) from results.json."""
    def cells(m):
        if "skipped" in m:
            return [m["skipped"].replace("|", "\\|")[:120], "", "", "", ""]
        tract = m["tract_ms"] if isinstance(m["tract_ms"], float) else "refused"
        return [f"{m['parameters']:,}", f"{m['macs'] / 1e6:.2f} M", f"{m['bytes'] / 1e6:.2f} MB",
                str(m["ort_ms"]), str(tract)]

    lines = ["| model | seq | command | parameters | MACs | file | onnxruntime ms | tract ms "
             "| checker | onnxruntime shapes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results.items():
        lines.append("| `%s` | %d | before | %s | | |" % (name, entry["sequence"],
                                                      " | ".join(cells(entry["before"]))))
        for label, m in entry.get("onnx-prune", {}).items():
            extra = [m.get("checker", ""), m.get("onnxruntime", "")] if "skipped" not in m \
                else ["", ""]
            lines.append("| | | %s | %s | %s |" % (label, " | ".join(cells(m)),
                                                    " | ".join(e[:60] for e in extra)))
    lines += ["", "| model | " + " | ".join(next(
        (list(e["onnxsim"]) for e in results.values() if "onnxsim" in e), [])) + " |"]
    lines.append("|---|---|---|---|")
    for name, entry in results.items():
        if "onnxsim" not in entry:
            continue
        row = []
        for m in entry["onnxsim"].values():
            if "skipped" in m or "error" in m:
                row.append(m.get("skipped") or m["error"][:80])
                continue
            text = ("changed, " if m["changed"] else "no change, ") + f"{m['parameters']:,} params"
            text += ", checker " + ("passes" if m["checker"] == "passes" else "**fails**")
            text += ", ort " + ("ok" if m["onnxruntime"] == "same output shapes"
                                 else m["onnxruntime"][:60])
            row.append(text)
        lines.append(f"| `{name}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx-prune", help="the onnx-prune binary (omit: no shrink runs)")
    parser.add_argument("--models", help="comma-separated names (default: all fixtures, minilm)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per latency")
    parser.add_argument("--skip-onnxsim", action="store_true")
    parser.add_argument("--tables", action="store_true",
                        help="only print the tables of the saved results.json")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    if args.tables:
        with open(os.path.join(OUT, "results.json")) as f:
            print(tables(json.load(f)))
        return
    models = {name: os.path.join(FIXTURES, f"{name}.onnx") for name in FIXTURE_MODELS}
    wanted = args.models.split(",") if args.models else None
    if wanted is None or any(w.startswith("minilm") for w in wanted):
        models.update(export_minilm())
    saved = os.path.join(OUT, "results.json")
    results = {}
    if os.path.exists(saved):  # a run with --models updates its own entries
        with open(saved) as f:
            results = json.load(f)
    for name, path in models.items():
        if wanted and name not in wanted:
            continue
        sequence = SEQUENCE if name.startswith("minilm") else \
            TEXT_BERT_SEQUENCE if name.startswith("text_bert") else FIXTURE_SEQUENCE
        entry = {"sequence": sequence, "before": measure(path, sequence, args.runs)}
        if args.onnx_prune:
            entry["onnx-prune"] = run_onnx_prune(os.path.abspath(args.onnx_prune), name, path,
                                                 sequence, args.runs)
        if not args.skip_onnxsim:
            entry["onnxsim"] = onnxsim_results(name, path, sequence)
        results[name] = entry
        print(json.dumps({name: entry}), flush=True)
        with open(saved, "w") as f:
            json.dump(results, f, indent=1)
    print(tables(results))


if __name__ == "__main__":
    main()
