//! Binary records for the embedded backend's tables. Little-endian, length-prefixed; the format
//! is private to this crate (byte-compatibility with etcd's data files is not a goal).

use bytes::Bytes;

use crate::{Event, EventType, KeyValue};

fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn get_i64(buf: &[u8], at: &mut usize) -> Option<i64> {
    let v = i64::from_le_bytes(buf.get(*at..*at + 8)?.try_into().ok()?);
    *at += 8;
    Some(v)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

fn get_bytes<'a>(buf: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(buf.get(*at..*at + 4)?.try_into().ok()?) as usize;
    *at += 4;
    let b = buf.get(*at..*at + len)?;
    *at += len;
    Some(b)
}

/// A KV table value: create_revision, mod_revision, version, value.
pub fn encode_record(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(kv.value.len() + 28);
    put_i64(&mut buf, kv.create_revision);
    put_i64(&mut buf, kv.mod_revision);
    put_i64(&mut buf, kv.version);
    put_bytes(&mut buf, &kv.value);
    buf
}

pub fn decode_record(key: &str, buf: &[u8]) -> Option<KeyValue> {
    let mut at = 0;
    decode_record_at(key, buf, &mut at)
}

fn decode_record_at(key: &str, buf: &[u8], at: &mut usize) -> Option<KeyValue> {
    let create_revision = get_i64(buf, at)?;
    let mod_revision = get_i64(buf, at)?;
    let version = get_i64(buf, at)?;
    let value = Bytes::copy_from_slice(get_bytes(buf, at)?);
    Some(KeyValue { key: key.to_string(), value, create_revision, mod_revision, version })
}

/// A LOG table value: kind, key, new record, optional previous record.
pub fn encode_event(ev: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(ev.kv.value.len() * 2 + 64);
    buf.push(match ev.kind {
        EventType::Put => 0,
        EventType::Delete => 1,
    });
    put_bytes(&mut buf, ev.kv.key.as_bytes());
    buf.extend_from_slice(&encode_record(&ev.kv));
    match &ev.prev_kv {
        Some(prev) => {
            buf.push(1);
            buf.extend_from_slice(&encode_record(prev));
        }
        None => buf.push(0),
    }
    buf
}

/// Reads only the key of a LOG value (cheap prefix filtering during replay).
pub fn event_key(buf: &[u8]) -> Option<&str> {
    let mut at = 1;
    std::str::from_utf8(get_bytes(buf, &mut at)?).ok()
}

pub fn decode_event(buf: &[u8]) -> Option<Event> {
    let kind = match buf.first()? {
        0 => EventType::Put,
        _ => EventType::Delete,
    };
    let mut at = 1;
    let key = std::str::from_utf8(get_bytes(buf, &mut at)?).ok()?.to_string();
    let kv = decode_record_at(&key, buf, &mut at)?;
    let has_prev = *buf.get(at)?;
    at += 1;
    let prev_kv = if has_prev == 1 { Some(decode_record_at(&key, buf, &mut at)?) } else { None };
    Some(Event { kind, kv, prev_kv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_round_trips() {
        let kv = KeyValue { key: "/a".into(), value: Bytes::from_static(b"x"), create_revision: 2, mod_revision: 5, version: 3 };
        let ev = Event { kind: EventType::Put, kv: kv.clone(), prev_kv: Some(KeyValue { mod_revision: 4, ..kv.clone() }) };
        let buf = encode_event(&ev);
        assert_eq!(event_key(&buf), Some("/a"));
        assert_eq!(decode_event(&buf), Some(ev));
        assert_eq!(decode_record("/a", &encode_record(&kv)), Some(kv));
    }
}
