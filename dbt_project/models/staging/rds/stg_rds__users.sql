with

source as (

    select
        user_id,
        user_name,
        user_age,
        user_country,
        created_at
    from {{ source('rds', 'users') }}

),

cleaned as (

    select
        {{ blank_to_null('user_id') }} as user_id_text,
        {{ blank_to_null('user_name') }} as user_name,
        {{ blank_to_null('user_age') }} as user_age_text,
        {{ blank_to_null('user_country') }} as user_country,
        {{ blank_to_null('created_at') }} as created_at_text
    from source

),

final as (

    select
        {{ parse_bigint('user_id_text') }} as user_id,
        user_name,
        {{ parse_bigint('user_age_text') }} as user_age,
        user_country,
        {{ parse_timestamp_utc('created_at_text', allow_date_only=true) }} as created_at
    from cleaned

)

select * from final
