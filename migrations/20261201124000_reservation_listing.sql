-- Listing reservations newest first, keyset-paged on (created_at, reservation_id): overall and
-- per location (a location-bound key always filters by its location).
CREATE INDEX reservations_recent ON reservations (created_at, reservation_id);
CREATE INDEX reservations_location_recent ON reservations (location_id, created_at, reservation_id);
