{{
    config(
        dist='all',
        sort='user_id',
    )
}}

with

users as (

    select
        user_id,
        user_name,
        user_age,
        user_country,
        created_at
    from {{ ref('stg_rds__users') }}

),

final as (

    select
        user_id,
        user_name,
        user_age,
        user_country,
        created_at
    from users

)

select * from final
