-- The merchants' activity per country (macros/activity.sql): what dim_merchants rolls
-- up into its totals and picks the home country (the largest count) from.
{{ country_activity('merchant_id') }}
