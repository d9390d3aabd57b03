fn main() {
    println!("socksify {}", env!("CARGO_PKG_VERSION"));
}
