"""The demo data: a few people and companies, with the variety real data has."""

from __future__ import annotations

from service.tools.demo_upstream.store import StoredCollection

_PEOPLE = (
    ("Ada Lovelace", "c-1", "London", ["math", "engines"]),
    ("Bjørn Hansen", "c-2", "Oslo", ["sales"]),
    ("Chloé Dubois", "c-3", "Lyon", ["design", "ux"]),
    ("Dmitri Ivanov", "c-4", "Tromsø", []),
    ("Eva Berg", "c-2", "Bergen", ["support"]),
    ("Fatima Haddad", "c-5", "Oslo", ["finance", "audit"]),
    ("Gustav Lund", "c-6", "Trondheim", ["ops"]),
    ("Hana Sato", "c-7", "Kyoto", ["research"]),
    ("Ingrid Åsheim", "c-1", "Stavanger", ["sales", "vip"]),
    ("José Álvarez", "c-8", "Porto", ["legal"]),
    ("Kari Nordmann", "c-2", "Oslo", []),
    ("Lars Øvrebø", "c-9", "Bodø", ["ops", "on-call"]),
    ("Mei Chen", "c-10", "Oslo", ["research", "ml"]),
    ("Nils Strand", "c-3", "Drammen", ["support"]),
    ("Olga Petrova", "c-4", "Bergen", ["design"]),
    ("Pål Eriksen", "c-5", "Ålesund", ["finance"]),
    ("Quentin Moreau", "c-6", "Lyon", []),
    ("Rania Aziz", "c-7", "Oslo", ["sales"]),
    ("Siri Bakken", "c-8", "Hamar", ["legal", "gdpr"]),
    ("Tomás Ruiz", "c-9", "Porto", ["ops"]),
)
_COMPANIES = (
    ("Analytical Engines Ltd", "GB", 1843),
    ("Fjord Handel AS", "NO", 1990),
    ("Atelier Lumière", "FR", 2004),
    ("Polar Logistics", "NO", 2011),
    ("Haddad & Berg", "NO", 1998),
    ("Nordlys Drift AS", "NO", 2015),
    ("Sakura Research KK", "JP", 1977),
    ("Ribeira Jurídica", "PT", 2001),
    ("Bodø Bryggeri", "NO", 1893),
    ("Blåbær AI", "NO", 2023),
)


def seed_collections() -> dict[str, StoredCollection]:
    """Small, varied demo data; records share `updated_at` in batches, like bulk imports."""
    people = StoredCollection()
    for number, (name, company, city, tags) in enumerate(_PEOPLE, start=1):
        batch = (number - 1) // 5
        people.put(
            {
                "id": f"p-{number}",
                "updated_at": f"2026-03-0{batch + 1}T12:00:00.000000Z",
                "deleted": False,
                "name": name,
                "email": f"person{number}@example.com",
                "company_id": company,
                "address": {"city": city, "country": "NO" if number % 3 else "EU"},
                "tags": tags,
                "active": number % 4 != 0,
                "score": round(number * 1.5, 1),
                "manager_id": f"p-{number - 1}" if number > 1 else None,
            }
        )
    people.put(
        {
            "id": "p-21",
            "updated_at": "2026-03-05T08:30:00.000000Z",
            "deleted": True,
            "name": "Ulla Tombstone",
            "email": "person21@example.com",
        }
    )
    companies = StoredCollection()
    for number, (name, country, founded) in enumerate(_COMPANIES, start=1):
        companies.put(
            {
                "id": f"c-{number}",
                "updated_at": "2026-02-15T09:00:00.000000Z",
                "deleted": False,
                "name": name,
                "country": country,
                "founded": founded,
                "contacts": [{"type": "email", "value": f"post@company{number}.example"}],
            }
        )
    return {"people": people, "companies": companies}
