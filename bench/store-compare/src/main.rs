//! redb vs SQLite for the embedded store, measured the way the store uses them: every
//! acknowledged write is fsynced, writes are group-committed (many puts, one transaction),
//! values are ~1 KiB JSON objects, reads are point gets.
//!
//! `cargo run --release -- [N]` (N writes per case, default 20000).

use std::time::Instant;

use redb::{Durability, ReadableDatabase, TableDefinition};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

fn value(i: usize) -> Vec<u8> {
    format!("{{\"metadata\":{{\"name\":\"p-{i}\",\"namespace\":\"bench\"}},\"spec\":{}}}", "x".repeat(900)).into_bytes()
}

fn redb_case(n: usize, batch: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("db")).unwrap();
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let mut tx = db.begin_write().unwrap();
        tx.set_durability(Durability::Immediate).unwrap();
        {
            let mut table = tx.open_table(KV).unwrap();
            for i in chunk {
                table.insert(format!("/registry/pods/bench/p-{i}").as_str(), value(*i).as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let writes = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rx = db.begin_read().unwrap();
    let table = rx.open_table(KV).unwrap();
    for i in 0..n {
        let v = table.get(format!("/registry/pods/bench/p-{i}").as_str()).unwrap().unwrap();
        assert!(!v.value().is_empty());
    }
    (writes, t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn sqlite_case(n: usize, batch: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    // WAL with synchronous=FULL: each commit is fsynced, the fastest durable SQLite setting.
    db.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;").unwrap();
    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let tx = db.transaction().unwrap();
        {
            let mut st = tx.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)").unwrap();
            for i in chunk {
                st.execute(rusqlite::params![format!("/registry/pods/bench/p-{i}"), value(*i)]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let writes = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut st = db.prepare_cached("SELECT v FROM kv WHERE k = ?1").unwrap();
    for i in 0..n {
        let v: Vec<u8> = st.query_row([format!("/registry/pods/bench/p-{i}")], |r| r.get(0)).unwrap();
        assert!(!v.is_empty());
    }
    (writes, t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    println!("| engine | writes per fsynced commit | durable writes/s | point read (µs) |");
    println!("|---|---|---|---|");
    for batch in [1, 64] {
        let n = if batch == 1 { n / 10 } else { n };
        let (w, r) = redb_case(n, batch);
        println!("| redb 4 | {batch} | {w:.0} | {r:.2} |");
        let (w, r) = sqlite_case(n, batch);
        println!("| SQLite (WAL, synchronous=FULL) | {batch} | {w:.0} | {r:.2} |");
    }
}
