-- wrk script of bench/write.sh: a 50-property contact, PATCHed to contacts 1-250 (or POSTed, WRITE_METHOD=POST).
local body = [=[{"properties":{"email":"nia.okafor@example.org","firstname":"Nia","lastname":"Okafor","phone":"+44 20 7946 0958","mobilephone":"+44 7700 900123","address":"10 Downing Street","city":"London","state":"England","zip":"SW1A 2AA","country":"GB","date_of_birth":"1990-04-01","company":"Globex","jobtitle":"Buyer","notes":"Prefers calls after 6pm. Renewal due in March; asked about the enterprise tier and SSO.","lifecyclestage":"customer","custom_01":"value of custom_01 for the benchmark","custom_02":"value of custom_02 for the benchmark","custom_03":"value of custom_03 for the benchmark","custom_04":"value of custom_04 for the benchmark","custom_05":"value of custom_05 for the benchmark","custom_06":"value of custom_06 for the benchmark","custom_07":"value of custom_07 for the benchmark","custom_08":"value of custom_08 for the benchmark","custom_09":"value of custom_09 for the benchmark","custom_10":"value of custom_10 for the benchmark","custom_11":"value of custom_11 for the benchmark","custom_12":"value of custom_12 for the benchmark","custom_13":"value of custom_13 for the benchmark","custom_14":"value of custom_14 for the benchmark","custom_15":"value of custom_15 for the benchmark","custom_16":"value of custom_16 for the benchmark","custom_17":"value of custom_17 for the benchmark","custom_18":"value of custom_18 for the benchmark","custom_19":"value of custom_19 for the benchmark","custom_20":"value of custom_20 for the benchmark","custom_21":"value of custom_21 for the benchmark","custom_22":"value of custom_22 for the benchmark","custom_23":"value of custom_23 for the benchmark","custom_24":"value of custom_24 for the benchmark","custom_25":"value of custom_25 for the benchmark","custom_26":"value of custom_26 for the benchmark","custom_27":"value of custom_27 for the benchmark","custom_28":"value of custom_28 for the benchmark","custom_29":"value of custom_29 for the benchmark","custom_30":"value of custom_30 for the benchmark","custom_31":"value of custom_31 for the benchmark","custom_32":"value of custom_32 for the benchmark","custom_33":"value of custom_33 for the benchmark","custom_34":"value of custom_34 for the benchmark","custom_35":"value of custom_35 for the benchmark"}}]=]
local method = os.getenv("WRITE_METHOD") or "PATCH"
local n = 0
request = function()
  n = n + 1
  local path = "/crm/v3/objects/contacts"
  if method == "PATCH" then path = path .. "/" .. (n % 250 + 1) end
  return wrk.format(method, path, {["X-Api-Key"] = "bench-key-0123456789abcdef",
    ["Content-Type"] = "application/json"}, body)
end

-- Think time per connection (ms): a moderate, equal offered load for both
-- routes, instead of each running flat out.
local think = tonumber(os.getenv("WRITE_DELAY_MS") or "2")
delay = function()
  return think
end
