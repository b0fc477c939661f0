//! Deterministic sample contacts for the demo CRM and the benchmarks.
//!
//! HubSpot CRM v3 shaped: `{"id","properties":{...},"createdAt","updatedAt","archived"}`
//! with e-mails, phones, dates of birth, addresses, and free-text notes that
//! carry e-mails, phone numbers and Luhn-valid card numbers, like the peer
//! benchmark's fixtures. Same seed, same bytes, on every machine. The data is
//! invented: no real person is described.

use serde_json::{Value, json};

const FIRST: [&str; 26] = [
    "Alice", "Bob", "Carla", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal",
    "Lena", "Marta", "Nikolai", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tomoko", "Ulrich",
    "Vera", "Wei", "Ximena", "Yusuf", "Zoe",
];
const LAST: [&str; 26] = [
    "Andersen", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoffmann",
    "Ivanova", "Jansen", "Kowalski", "Lopez", "Muller", "Nakamura", "Okafor", "Petrov", "Quintero",
    "Rossi", "Schmidt", "Tanaka", "Umarov", "Varga", "Weber", "Xu", "Yilmaz", "Zimmer",
];
const DOMAINS: [&str; 5] = [
    "example.com",
    "acme-corp.example",
    "globex.example",
    "initech.example",
    "mail.example.org",
];
const CITIES: [(&str, &str, &str); 6] = [
    ("Berlin", "BE", "DE"),
    ("Paris", "IDF", "FR"),
    ("Madrid", "MD", "ES"),
    ("Boston", "MA", "US"),
    ("Toronto", "ON", "CA"),
    ("Dublin", "D", "IE"),
];
const STREETS: [&str; 6] = [
    "Main St",
    "Hauptstrasse",
    "Rue de la Paix",
    "Calle Mayor",
    "Elm Street",
    "Harbour Road",
];
const STAGES: [&str; 5] = [
    "subscriber",
    "lead",
    "opportunity",
    "customer",
    "evangelist",
];
const JOBS: [&str; 5] = [
    "Head of Sales",
    "CTO",
    "Procurement Manager",
    "Data Protection Officer",
    "Founder",
];
const WORDS: [&str; 24] = [
    "call",
    "scheduled",
    "follow",
    "up",
    "renewal",
    "discussed",
    "pricing",
    "quote",
    "contract",
    "legal",
    "review",
    "onboarding",
    "ticket",
    "escalated",
    "budget",
    "approved",
    "demo",
    "requested",
    "integration",
    "invoice",
    "overdue",
    "upsell",
    "meeting",
    "feedback",
];

/// SplitMix64: tiny, fast, and good enough for sample data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.range(0, items.len() as u64) as usize]
    }
}

fn phone(r: &mut Rng) -> String {
    match r.range(0, 3) {
        0 => format!(
            "+1 ({:03}) {:03}-{:04}",
            r.range(200, 999),
            r.range(200, 999),
            r.range(0, 10_000)
        ),
        1 => format!("+49 {} {:07}", r.range(30, 899), r.range(0, 10_000_000)),
        _ => format!(
            "+33 {} {:02} {:02} {:02} {:02}",
            r.range(1, 9),
            r.range(0, 100),
            r.range(0, 100),
            r.range(0, 100),
            r.range(0, 100)
        ),
    }
}

/// A 16-digit number that passes the Luhn check.
pub fn card(r: &mut Rng) -> String {
    let mut d: Vec<u32> = match r.range(0, 3) {
        0 => vec![4],
        1 => vec![5, 1],
        _ => vec![6, 0, 1, 1],
    };
    while d.len() < 15 {
        d.push(r.range(0, 10) as u32);
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    d.push((10 - sum % 10) % 10);
    d.iter().map(|x| char::from(b'0' + *x as u8)).collect()
}

fn notes(r: &mut Rng, target: usize) -> String {
    let pii = r.range(0, 10) >= 4;
    let mut parts: Vec<String> = Vec::new();
    let mut n = 0;
    while n < target {
        let roll = r.range(0, 100);
        let tok = if pii && roll < 3 {
            format!(
                "{}.{}@{}",
                r.pick(&FIRST).to_lowercase(),
                r.pick(&LAST).to_lowercase(),
                r.pick(&DOMAINS)
            )
        } else if pii && roll < 5 {
            format!("call {}", phone(r))
        } else if pii && roll < 6 {
            let c = card(r);
            if r.range(0, 2) == 0 {
                format!("card {} {} {} {}", &c[..4], &c[4..8], &c[8..12], &c[12..])
            } else {
                format!("card {c}")
            }
        } else {
            r.pick(&WORDS).to_owned()
        };
        n += tok.len() + 1;
        parts.push(tok);
    }
    let mut s = parts.join(" ");
    if let Some(f) = s.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    s.push('.');
    s
}

fn iso(r: &mut Rng, lo: u64, hi: u64) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        r.range(lo, hi),
        r.range(1, 13),
        r.range(1, 29),
        r.range(0, 24),
        r.range(0, 60),
        r.range(0, 60),
        r.range(0, 1000)
    )
}

/// The contact with id `id` (always the same for the same id).
pub fn contact(id: u64) -> Value {
    let mut r = Rng::new(0x00C0_FFEE ^ id.wrapping_mul(0x9E37_79B9));
    let first = r.pick(&FIRST);
    let last = r.pick(&LAST);
    let dom = r.pick(&DOMAINS);
    let (city, state, country) = CITIES[r.range(0, CITIES.len() as u64) as usize];
    let created = iso(&mut r, 2019, 2025);
    let updated = iso(&mut r, 2024, 2026);
    let company = dom.split(['.', '-']).next().unwrap_or(dom);
    let note_len = r.range(900, 1500) as usize;
    json!({
        "id": id.to_string(),
        "properties": {
            "email": format!("{}.{}{}@{}", first.to_lowercase(), last.to_lowercase(), id, dom),
            "firstname": first,
            "lastname": last,
            "phone": phone(&mut r),
            "mobilephone": phone(&mut r),
            "address": format!("{} {}", r.range(1, 300), r.pick(&STREETS)),
            "city": city,
            "state": state,
            "zip": format!("{:05}", r.range(0, 100_000)),
            "country": country,
            "date_of_birth": format!("{:04}-{:02}-{:02}", r.range(1950, 2004), r.range(1, 13), r.range(1, 29)),
            "company": company,
            "jobtitle": r.pick(&JOBS),
            "website": format!("https://www.{dom}"),
            "lifecyclestage": r.pick(&STAGES),
            "hubspot_owner_id": r.range(10_000_000, 100_000_000).to_string(),
            "createdate": created,
            "lastmodifieddate": updated,
            "hs_object_id": id.to_string(),
            "notes": notes(&mut r, note_len),
        },
        "createdAt": created,
        "updatedAt": updated,
        "archived": false,
    })
}

/// A list page `{"results":[...],"paging":{"next":{...}}}` of contacts `after+1..=after+limit`
/// out of `total`.
pub fn page(path: &str, after: u64, limit: u64, total: u64) -> Value {
    let end = (after + limit).min(total);
    let results: Vec<Value> = (after + 1..=end).map(contact).collect();
    let mut v = json!({ "results": results });
    if end < total {
        v["paging"] =
            json!({ "next": { "after": end.to_string(), "link": format!("{path}?after={end}") } });
    }
    v
}

/// A body shaped like the peer benchmark's fixtures: one contact when `n` is 0,
/// else a list of `n` contacts.
pub fn fixture_body(n: u64) -> Vec<u8> {
    let v = if n == 0 {
        contact(1)
    } else {
        page("/api/contacts", 0, n, n + 1)
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_deterministic_and_carry_pii_in_notes() {
        assert_eq!(contact(7), contact(7));
        assert_ne!(contact(7), contact(8));
        let with_pii = (1..=50)
            .filter(|&i| {
                let n = contact(i)["properties"]["notes"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                n.contains('@') || n.contains("card") || n.contains("call +")
            })
            .count();
        assert!(with_pii > 15, "{with_pii} of 50 notes carry personal data");
    }

    #[test]
    fn cards_pass_luhn() {
        let mut r = Rng::new(1);
        for _ in 0..100 {
            let c = card(&mut r);
            let mut found = Vec::new();
            crate::transform::detect::detect(
                c.as_bytes(),
                crate::transform::DetectorSet::all(),
                &mut found,
            );
            assert_eq!(found.len(), 1, "{c}");
        }
    }

    #[test]
    fn pages_link_to_the_next_one() {
        let p = page("/crm/v3/objects/contacts", 0, 10, 25);
        assert_eq!(p["results"].as_array().map(Vec::len), Some(10));
        assert_eq!(p["paging"]["next"]["after"], "10");
        let last = page("/crm/v3/objects/contacts", 20, 10, 25);
        assert_eq!(last["results"].as_array().map(Vec::len), Some(5));
        assert!(last.get("paging").is_none());
    }
}
