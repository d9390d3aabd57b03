//! The layering holds: each layer's files import only layers below it.

const LAYERS: [&str; 4] = ["sys", "runtime", "table", "ops"];

fn imports(text: &str) -> Vec<&'static str> {
    LAYERS.iter().copied().filter(|l| text.contains(&format!("crate::{l}"))).collect()
}

#[test]
fn each_layer_uses_only_those_below_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = vec![root.join(layer)];
        let mut sources = Vec::new();
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else {
                sources.push(p);
            }
        }
        for path in sources {
            let text = std::fs::read_to_string(&path).unwrap();
            for used in imports(&text) {
                let used_rank = LAYERS.iter().position(|l| *l == used).unwrap();
                assert!(used_rank <= rank, "{} ({layer}) uses {used}, a layer above it", path.display());
            }
        }
    }
}
