fn main() {
    let path = std::env::args().nth(1).unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let m = kortix_manifest::parse(&text).unwrap();
    println!("{}", serde_json::to_string_pretty(&m).unwrap());
    let w = kortix_manifest::write(&m);
    println!("{w}");
    let m2 = kortix_manifest::parse(&w).unwrap();
    println!("config_eq: {}", m.config_eq(&m2));
}
