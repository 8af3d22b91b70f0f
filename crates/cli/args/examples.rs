//! Each command's examples, shown after its help and as its man page's EXAMPLES section
//! (verbatim there). Every line fits in 80 columns, so that no terminal of that width wraps a
//! command line inside a flag or its value; longer commands continue after a backslash.

pub const INSPECT: &str = "\
Examples:
  onnx-prune inspect model.onnx
  onnx-prune inspect model.onnx --json > weights.json";

pub const PRUNE: &str = "\
Examples:
  onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.5
  onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.7 --scope global \\
      --exclude 'classifier'
  onnx-prune prune model.onnx -o pruned.onnx --pattern 2:4
  onnx-prune prune model.onnx -o pruned.onnx --sparsity 0.5 \\
      --method sparsegpt --calibration calib.npz
  onnx-prune prune model.onnx -o pruned.onnx --sparsity auto \\
      --inputs test.npz --labels test.npz:labels --max-accuracy-drop 0.01";

pub const CHECK: &str = "\
Examples:
  onnx-prune check dense.onnx pruned.onnx --inputs test_set.npz \\
      --labels test_set.npz:labels
  onnx-prune check model.onnx pruned.onnx --random 64 --seed 1 \\
      --shape images=1,3,224,224
  onnx-prune check model.onnx pruned.onnx --inputs model_dir/ \\
      --atol 1e-4 --rtol 1e-3";

pub const REPLAY: &str = "\
Examples:
  onnx-prune replay model.onnx --schedule schedule.json -o pruned.onnx
  onnx-prune replay model.onnx --schedule schedule.json --step 6 \\
      -o step6.onnx --explain
  onnx-prune replay model.onnx --schedule schedule.json -o pruned.onnx \\
      --check --inputs test.npz";

pub const SENSITIVITY: &str = "\
Examples:
  onnx-prune sensitivity model.onnx --inputs test.npz \\
      --labels test.npz:labels --plot s.svg
  onnx-prune sensitivity model.onnx --random 32 --sparsities 0.5,0.7,0.9 \\
      --report s.json
  onnx-prune sensitivity model.onnx --inputs test.npz --method sparsegpt \\
      --calibration c.npz
  onnx-prune sensitivity model.onnx --inputs test.npz --structure channels \\
      --calibration c.npz";

pub const SHRINK: &str = "\
Examples:
  onnx-prune shrink model.onnx --dry-run
  onnx-prune shrink model.onnx -o smaller.onnx
  onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.3 --round-to 8 \\
      --report r.json
  onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.5 --scope global \\
      --exclude 'head'
  onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.3 \\
      --check --random 16
  onnx-prune shrink model.onnx -o smaller.onnx --sparsity 0.5 \\
      --calibration calib.npz
  onnx-prune shrink model.onnx -o smaller.onnx --sparsity auto --round-to 8 \\
      --inputs test.npz --labels test.npz:labels --max-accuracy-drop 0.01 \\
      --calibration calib.npz
  onnx-prune shrink model.onnx -o fewer.onnx --drop-layers 2 \\
      --calibration calib.npz
  onnx-prune shrink model.onnx -o small.onnx --vocab-from train.npz:input_ids \\
      --unknown-token 100";

pub const COMPLETIONS: &str = "\
Examples:
  onnx-prune completions bash \\
      > ~/.local/share/bash-completion/completions/onnx-prune
  onnx-prune completions zsh > ~/.zfunc/_onnx-prune
  onnx-prune completions fish > ~/.config/fish/completions/onnx-prune.fish
  onnx-prune completions powershell >> $PROFILE";

pub const MAN: &str = "\
Examples:
  onnx-prune man > onnx-prune.1 && man ./onnx-prune.1
  onnx-prune man prune > onnx-prune-prune.1";
