"""Reference data the generator draws from: real cities and merchant categories."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class City:
    name: str
    country: str  # ISO 3166 alpha-2
    currency: str  # ISO 4217
    lat: float
    lon: float
    utc_offset_h: float  # standard time; daylight saving is ignored
    weight: float  # share of cards whose home this is


CITIES: Final[tuple[City, ...]] = (
    City("New York", "US", "USD", 40.7128, -74.0060, -5, 4),
    City("Los Angeles", "US", "USD", 34.0522, -118.2437, -8, 3),
    City("Chicago", "US", "USD", 41.8781, -87.6298, -6, 2),
    City("Toronto", "CA", "CAD", 43.6532, -79.3832, -5, 2),
    City("Mexico City", "MX", "MXN", 19.4326, -99.1332, -6, 2),
    City("Sao Paulo", "BR", "BRL", -23.5505, -46.6333, -3, 3),
    City("Buenos Aires", "AR", "ARS", -34.6037, -58.3816, -3, 1.5),
    City("Bogota", "CO", "COP", 4.7110, -74.0721, -5, 1),
    City("Lima", "PE", "PEN", -12.0464, -77.0428, -5, 1),
    City("Santiago", "CL", "CLP", -33.4489, -70.6693, -4, 1),
    City("London", "GB", "GBP", 51.5074, -0.1278, 0, 4),
    City("Paris", "FR", "EUR", 48.8566, 2.3522, 1, 3),
    City("Berlin", "DE", "EUR", 52.5200, 13.4050, 1, 2.5),
    City("Madrid", "ES", "EUR", 40.4168, -3.7038, 1, 2),
    City("Rome", "IT", "EUR", 41.9028, 12.4964, 1, 2),
    City("Amsterdam", "NL", "EUR", 52.3676, 4.9041, 1, 1.5),
    City("Stockholm", "SE", "SEK", 59.3293, 18.0686, 1, 1),
    City("Warsaw", "PL", "PLN", 52.2297, 21.0122, 1, 1),
    City("Zurich", "CH", "CHF", 47.3769, 8.5417, 1, 1),
    City("Dublin", "IE", "EUR", 53.3498, -6.2603, 0, 1),
    City("Lisbon", "PT", "EUR", 38.7223, -9.1393, 0, 1),
    City("Istanbul", "TR", "TRY", 41.0082, 28.9784, 3, 2),
    City("Cairo", "EG", "EGP", 30.0444, 31.2357, 2, 1.5),
    City("Lagos", "NG", "NGN", 6.5244, 3.3792, 1, 1.5),
    City("Nairobi", "KE", "KES", -1.2921, 36.8219, 3, 1),
    City("Johannesburg", "ZA", "ZAR", -26.2041, 28.0473, 2, 1),
    City("Dubai", "AE", "AED", 25.2048, 55.2708, 4, 1.5),
    City("Mumbai", "IN", "INR", 19.0760, 72.8777, 5.5, 3),
    City("Delhi", "IN", "INR", 28.7041, 77.1025, 5.5, 3),
    City("Singapore", "SG", "SGD", 1.3521, 103.8198, 8, 1.5),
    City("Bangkok", "TH", "THB", 13.7563, 100.5018, 7, 1.5),
    City("Jakarta", "ID", "IDR", -6.2088, 106.8456, 7, 2),
    City("Hong Kong", "HK", "HKD", 22.3193, 114.1694, 8, 1.5),
    City("Shanghai", "CN", "CNY", 31.2304, 121.4737, 8, 3),
    City("Seoul", "KR", "KRW", 37.5665, 126.9780, 9, 2),
    City("Tokyo", "JP", "JPY", 35.6762, 139.6503, 9, 3),
    City("Manila", "PH", "PHP", 14.5995, 120.9842, 8, 1.5),
    City("Sydney", "AU", "AUD", -33.8688, 151.2093, 10, 1.5),
    City("Melbourne", "AU", "AUD", -37.8136, 144.9631, 10, 1),
    City("Auckland", "NZ", "NZD", -36.8485, 174.7633, 12, 0.5),
)


@dataclass(frozen=True)
class MerchantCategory:
    mcc: str
    description: str
    weight: float  # how often a card shops in this category
    median: float  # lognormal amount: exp(mu) in major units
    sigma: float
    online_share: float  # share of merchants of this category that sell online


ATM_MCC: Final = "6011"
ONLINE_MCC: Final = "5999"
GROCERY_MCC: Final = "5411"

CATEGORIES: Final[tuple[MerchantCategory, ...]] = (
    MerchantCategory(GROCERY_MCC, "grocery stores, supermarkets", 22, 35, 0.7, 0.05),
    MerchantCategory("5812", "restaurants", 14, 28, 0.6, 0.0),
    MerchantCategory("5814", "fast food", 10, 11, 0.5, 0.1),
    MerchantCategory("5541", "fuel stations", 9, 45, 0.4, 0.0),
    MerchantCategory("4111", "local transit", 8, 4.5, 0.45, 0.2),
    MerchantCategory("5912", "pharmacies", 5, 20, 0.6, 0.1),
    MerchantCategory(ONLINE_MCC, "miscellaneous retail", 8, 30, 0.9, 1.0),
    MerchantCategory("5311", "department stores", 6, 60, 0.8, 0.2),
    MerchantCategory("5691", "clothing stores", 4, 55, 0.7, 0.3),
    MerchantCategory("5732", "electronics stores", 3, 120, 0.8, 0.4),
    MerchantCategory("7011", "hotels, lodging", 2, 160, 0.5, 0.5),
    MerchantCategory("4511", "airlines", 1, 250, 0.4, 0.8),
    MerchantCategory(ATM_MCC, "ATM cash withdrawal", 6, 0, 0, 0.0),
)

# Share of the daily peak that a city spends at each local hour: quiet nights,
# a morning rise, busy afternoons. The rhythm shifts traffic between time zones;
# the global rate stays what the caller asked for.
HOURLY_ACTIVITY: Final[tuple[float, ...]] = (
    0.15, 0.10, 0.07, 0.06, 0.07, 0.12, 0.25, 0.45, 0.65, 0.80, 0.90, 0.95,
    1.00, 1.00, 0.95, 0.92, 0.95, 1.00, 0.98, 0.90, 0.75, 0.55, 0.38, 0.25,
)  # fmt: skip

EARTH_RADIUS_KM: Final = 6371.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance; the flow's impossible-travel rule uses the same formula."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))
