//! `inspect` on every fixture: the table and the JSON, snapshotted.

use crate::common::{arg, stdout_ok};

#[test]
fn inspect_table_and_json_of_every_fixture() {
    insta::glob!("../fixtures", "*.onnx", |path| {
        let table = stdout_ok(&["inspect", arg(path)]);
        insta::assert_snapshot!("table", table);
        let json: serde_json::Value =
            serde_json::from_str(&stdout_ok(&["inspect", arg(path), "--json"])).unwrap();
        // Invariants before the snapshot: one entry per float constant, totals add up.
        let weights = json["weights"].as_array().unwrap();
        let params: u64 = weights.iter().map(|w| w["params"].as_u64().unwrap()).sum();
        assert_eq!(json["totals"]["params"].as_u64().unwrap(), params);
        for w in weights {
            assert!(w["zeros"].as_u64().unwrap() <= w["params"].as_u64().unwrap());
            let shape_product: i64 = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .product();
            assert_eq!(
                shape_product as u64,
                w["params"].as_u64().unwrap(),
                "{}",
                w["id"]
            );
        }
        insta::assert_json_snapshot!("json", json);
    });
}
