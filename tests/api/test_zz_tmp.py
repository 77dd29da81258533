import copy, json
from pathlib import Path
SAMPLES = Path("/work/main/sample_bundles/referrals")
def show(r):
    b = r.get_json()
    if "entry" in b:
        return r.status_code, [e["response"]["status"] + " " + e["response"]["location"].split("/_history")[0][:30] + e["response"]["location"][-3:] for e in b["entry"]]
    return r.status_code, b
def test_resend(client):
    b = json.loads((SAMPLES / "whiplash-transaction.json").read_text())
    sr = b["entry"][-1]
    sr["request"]["ifNoneExist"] = "identifier=urn:oid:2.16.840.1.113883.19.5|SR-9411"
    print(show(client.post("/fhir", data=json.dumps(b), content_type="application/fhir+json")))
    b2 = copy.deepcopy(b)
    b2["entry"][-1]["resource"]["note"] = [{"text": "NEW SAFETY NOTE"}]
    print(show(client.post("/fhir", data=json.dumps(b2), content_type="application/fhir+json")))
    print("conditions", client.get("/fhir/Condition?_summary=count").get_json()["total"])
    b3 = copy.deepcopy(b)
    b3["entry"][-1]["resource"]["identifier"][0]["value"] = "SR-NEW"
    b3["entry"][-1]["request"].pop("ifNoneExist")
    b3["entry"][2]["resource"]["identifier"][0]["value"] = "1987654320"
    b3["entry"][2]["request"]["ifNoneExist"] = "identifier=http://hl7.org/fhir/sid/us-npi|1987654320"
    print(show(client.post("/fhir", data=json.dumps(b3), content_type="application/fhir+json")))
