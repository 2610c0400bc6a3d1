-- The cards' activity per country (macros/activity.sql): what dim_cards rolls up into
-- its totals and picks the home country (the largest count) from.
{{ country_activity('card_id') }}
